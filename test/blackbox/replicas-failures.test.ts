// Issue 18, failures: three compiled replicas on one PostgreSQL behind nginx (docs/scaling.md)
// lose nothing when one of them is killed with a retry in hand, when the database goes away
// or restarts in the middle of a refresh storm, and through a rolling restart while a client
// keeps syncing and refreshing. The rolling restart comes after the PostgreSQL restart on
// purpose: the replicas that lived through it must not answer refreshes 503 once the database is
// back (sessions the restart left dead, store/pg-pool.ts).
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { call, type CallAnswer } from "../helpers/http-call.ts";
import { pidOfLocalPort } from "../helpers/replicas.ts";
import {
  changedIn,
  type HsDevices,
  logMarks,
  type ReplicaWorld,
  startReplicaWorld,
  storeFailures,
} from "./replicas-world.ts";

let w: ReplicaWorld & { hsDevices: HsDevices };
const RETRY_LEASE_MS = 5000;
// One federation request's time, which is also how long a killed replica's fetch lease outlives it.
const FETCH_TIMEOUT_MS = 5000;
let front: number;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const devicesOf = (a: CallAnswer, u: string) =>
  Object.keys((a.json?.device_keys as Record<string, object> | undefined)?.[u] ?? {}).sort();
/** /readyz's status, with its body when it is not 200 (which check failed). */
const readyz = async (opsPort: number) => {
  const res = await fetch(`http://127.0.0.1:${opsPort}/readyz`);
  const body = await res.text();
  return res.status === 200 ? "200" : `${res.status} ${body}`;
};

beforeAll(async () => {
  w = await startReplicaWorld({
    extra: [
      "--refresh-cache-ms",
      "0",
      "--refresh-wait-ms",
      "30000",
      "--retry-initial-ms",
      "1500",
      "--retry-max-ms",
      "3000",
      // Detection would refresh the users these tests query on its own, and hide whether the
      // retry (or the delivery) under test is what did it.
      "--detect",
      "off",
      // A claimed retry is another replica's to finish this long after its holder died.
      "--retry-lease-ms",
      String(RETRY_LEASE_MS),
      "--federation-timeout-ms",
      String(FETCH_TIMEOUT_MS),
    ],
  });
  front = w.nginx.port;
}, 180_000);
afterAll(() => w?.close(), 60_000);

/** Sync from `since` until `want` are all in device_lists.changed (or the time is up); the users seen. */
async function syncUntil(
  port: number,
  token: string,
  since: string,
  want: string[],
  ms = 20_000,
): Promise<Set<string>> {
  const seen = new Set<string>();
  const deadline = Date.now() + ms;
  let pos = since;
  while (Date.now() < deadline && !want.every((u) => seen.has(u))) {
    const a = await w.sync(port, token, pos, 200);
    expect(a.status).toBe(200);
    for (const u of changedIn(a)) seen.add(u);
    pos = String(a.json?.next_batch);
  }
  return seen;
}

describe("retries", () => {
  test("kill -9 of the replica that claimed a due retry: another one finishes it", async () => {
    const flaky = `@flaky:${w.remote2.serverName}`;
    w.remote2.setUser(makeUser(flaky, { devices: ["F1", "F2"] }));
    w.remote2.setBehaviour({ kind: "status", status: 503 }, { userId: flaky });
    const erin = w.login("erin", "ERIN1");
    expect((await w.keysQuery(front, erin, [flaky])).status).toBe(200); // erin tracks flaky
    const since = String((await w.sync(front, erin)).json?.next_batch);
    const failed = await w.refresh(front, flaky, w.login("flakyrequester"));
    expect(failed.status).toBe(502);
    expect(failed.json?.next_retry_in_ms).toBeGreaterThan(0);

    // The remote recovers, but holds the retry's fetch: the replica that claimed it is busy with it.
    w.remote2.clearBehaviours();
    const held = w.remote2.hold({ userId: flaky, endpoint: "devices" });
    const fetches = () => w.remote2.requests.filter((r) => r.userId === flaky && r.endpoint === "devices");
    const before = fetches().length;
    await w.remote2.waitFor(() => fetches().length > before, 60_000);
    const claimed = fetches().at(-1)!;
    const pid = pidOfLocalPort(claimed.remotePort!, w.remote2.port);
    const holder = w.replicas.find((r) => r.pid === pid);
    expect(holder, `the retry's fetch came from pid ${pid}, not a replica`).toBeDefined();
    await holder!.kill();
    const killedAt = performance.now();
    held.release(); // its request died with it
    try {
      // Another replica takes the retry over once the dead one's leases run out (the retry's
      // claim, and its fetch lease: one fetch timeout), and finishes it: the fresh list is served
      // and erin is told, by the replicas still alive. Polled past the bound, so a miss shows by
      // how much; the bound itself is the correctness claim (within retry lease + one fetch).
      const alive = w.replicas.filter((r) => r !== holder);
      await expect
        .poll(async () => devicesOf(await w.keysQuery(alive[0]!.port, erin, [flaky]), flaky), {
          timeout: 45_000,
          interval: 200,
        })
        .toEqual(["F1", "F2"]);
      const tookMs = performance.now() - killedAt;
      expect(tookMs, `took ${Math.round(tookMs)} ms after the kill`).toBeLessThan(RETRY_LEASE_MS + FETCH_TIMEOUT_MS);
      expect(fetches().some((r) => r.remotePort !== claimed.remotePort)).toBe(true);
      expect([...(await syncUntil(alive[1]!.port, erin, since, [flaky]))]).toContain(flaky);
    } finally {
      await holder!.start(); // back for the next tests, whatever happened here
    }
  }, 180_000);
});

describe("PostgreSQL down", () => {
  test("pass-through and plain /sync work through every replica, refreshes 503 with Retry-After, /readyz 503; all resumes", async () => {
    const target = `@down:${w.remote.serverName}`;
    w.remote.setUser(makeUser(target, { devices: 1 }));
    const hal = w.login("hal", "HAL1");
    for (const r of w.replicas) expect(await readyz(r.opsPort)).toBe("200");
    await w.pg.stop();
    try {
      for (const port of [...w.replicas.map((r) => r.port), front]) {
        const who = await call(port, "GET", "/_matrix/client/v3/account/whoami", { token: hal });
        expect([who.status, who.json?.user_id]).toEqual([200, "@hal:hs.test"]);
        const sync = await w.sync(port, hal, "s1");
        expect(sync.status).toBe(200);
        expect(sync.json?.next_batch).toBeTypeOf("string");
        const refused = await w.refresh(port, target, hal);
        expect([refused.status, refused.json?.errcode]).toEqual([503, "M_UNKNOWN"]);
        expect(Number(refused.headers["retry-after"])).toBeGreaterThan(0);
      }
      for (const r of w.replicas)
        await expect.poll(async () => (await readyz(r.opsPort)).slice(0, 3), { timeout: 15_000 }).toBe("503");
      for (const r of w.replicas) expect(r.running).toBe(true);
    } finally {
      await w.pg.start();
    }
    // Back without a restart: every replica is ready again and refreshes.
    for (const r of w.replicas) await expect.poll(() => readyz(r.opsPort), { timeout: 30_000 }).toBe("200");
    for (const [i, r] of w.replicas.entries()) {
      const u = `@back${i}:${w.remote.serverName}`;
      w.remote.setUser(makeUser(u, { devices: 1 }));
      // A client honouring the 503's Retry-After (5 s) gets through.
      let n = 0;
      await expect
        .poll(async () => (await w.refresh(r.port, u, w.login(`back${i}_${n++}`))).status, {
          timeout: 20_000,
          interval: 1000,
        })
        .toBe(202);
    }
  }, 120_000);

  test("a PostgreSQL restart in the middle of a refresh storm: no crash, 503 + Retry-After while down, nothing accepted is lost", async () => {
    const N = 300;
    const targets = Array.from({ length: N }, (_, i) => `@storm${i}:${w.remote.serverName}`);
    for (const u of targets) w.remote.setUser(makeUser(u, { devices: 1 }));
    const ivy = w.login("ivy", "IVY1");
    expect((await w.keysQuery(front, ivy, targets)).status).toBe(200); // ivy tracks all of them
    // Something delivered and acknowledged before the storm stays acknowledged after it.
    const pre = `@prestorm:${w.remote.serverName}`;
    w.remote.setUser(makeUser(pre, { devices: 1 }));
    expect((await w.keysQuery(front, ivy, [pre])).status).toBe(200);
    const start = String((await w.sync(front, ivy)).json?.next_batch);
    expect((await w.refresh(front, pre, w.login("prestormer"))).status).toBe(202);
    // The fan-out is committed before the 202: the next sync carries it, whichever replica
    // nginx sends it to.
    const got = await w.sync(front, ivy, start);
    expect(changedIn(got)).toContain(pre);
    const acked = String((await w.sync(front, ivy, String(got.json?.next_batch))).json?.next_batch);

    // The storm: one refresh every 10 ms through nginx, each from its own user; PostgreSQL
    // stops 1 s in and comes back 1.5 s later.
    const answers: Promise<CallAnswer>[] = [];
    const storm = (async () => {
      for (let i = 0; i < N; i++) {
        answers.push(w.refresh(front, targets[i]!, w.login(`stormer${i}`)));
        await sleep(10);
      }
    })();
    await sleep(1000);
    await w.pg.stop();
    await sleep(1500);
    await w.pg.start();
    await storm;
    const done = await Promise.all(answers);
    const statuses = new Map<number, number>();
    for (const a of done) statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
    expect(
      done.filter((a) => a.status !== 202 && a.status !== 503).map((a) => `${a.status} ${a.body}`),
      JSON.stringify(Object.fromEntries(statuses)),
    ).toEqual([]);
    expect(statuses.get(503) ?? 0).toBeGreaterThan(0);
    for (const a of done.filter((x) => x.status === 503)) expect(Number(a.headers["retry-after"])).toBeGreaterThan(0);
    for (const r of w.replicas) expect(r.running).toBe(true);

    // Every accepted refresh reaches ivy; the acknowledged one does not come back.
    const accepted = targets.filter((_, i) => done[i]!.status === 202);
    const seen = await syncUntil(front, ivy, acked, accepted, 30_000);
    expect(accepted.filter((u) => !seen.has(u))).toEqual([]);
    expect(seen.has(pre)).toBe(false);
    for (const r of w.replicas) await expect.poll(() => readyz(r.opsPort), { timeout: 30_000 }).toBe("200");
    let n = 0;
    const after = `@afterstorm:${w.remote.serverName}`;
    w.remote.setUser(makeUser(after, { devices: 1 }));
    await expect
      .poll(async () => (await w.refresh(front, after, w.login(`afterstorm${n++}`))).status, {
        timeout: 20_000,
        interval: 1000,
      })
      .toBe(202);
  }, 180_000);
});

describe("PostgreSQL back", () => {
  test("once /readyz says ready again, every replica accepts the next refreshes (no cool-down left over from the outage)", async () => {
    // Twice: a failure the outage left in each replica's store guard comes at a moment of its own.
    for (let round = 0; round < 2; round++) {
      await w.pg.stop();
      await sleep(1500);
      await w.pg.start();
      for (const r of w.replicas) await expect.poll(() => readyz(r.opsPort), { timeout: 30_000 }).toBe("200");
      const marks = logMarks(w.replicas);
      const refused: string[] = [];
      for (let i = 0; i < 10; i++)
        for (const r of w.replicas) {
          const u = `@ready${round}_${i}_${r.name}:${w.remote.serverName}`;
          w.remote.setUser(makeUser(u, { devices: 1 }));
          const a = await w.refresh(r.port, u, w.login(`readier${round}_${i}_${r.name}`));
          if (a.status !== 202) refused.push(`round ${round}, ${r.name} #${i}: ${a.status} ${a.body}`);
        }
      expect(refused, storeFailures(w.replicas, marks).join("; ")).toEqual([]);
    }
  }, 120_000);
});

describe("rolling restart", () => {
  test("SIGTERM one replica at a time while a client syncs and refreshes through nginx: no request or delivery lost", async () => {
    const targets = Array.from({ length: 400 }, (_, i) => `@roll${i}:${w.remote.serverName}`);
    for (const u of targets) w.remote.setUser(makeUser(u, { devices: 1 }));
    const jo = w.login("jo", "JO1");
    expect((await w.keysQuery(front, jo, targets)).status).toBe(200);
    const marks = logMarks(w.replicas);
    const problems: string[] = [];
    const seen = new Set<string>();
    const refreshed: string[] = [];
    let running = true;
    let pos = String((await w.sync(front, jo)).json?.next_batch);
    const syncer = (async () => {
      while (running) {
        const a = await w.sync(front, jo, pos, 300).catch((e: Error) => e);
        if (a instanceof Error || a.status !== 200) {
          problems.push(
            `${new Date().toISOString()} sync: ${a instanceof Error ? a.message : `${a.status} ${a.body}`}`,
          );
          continue;
        }
        for (const u of changedIn(a)) seen.add(u);
        pos = String(a.json?.next_batch);
      }
    })();
    const refresher = (async () => {
      for (let i = 0; running && i < targets.length; i++) {
        const a = await w.refresh(front, targets[i]!, w.login(`roller${i}`)).catch((e: Error) => e);
        if (a instanceof Error || a.status !== 202)
          problems.push(
            `${new Date().toISOString()} refresh: ${a instanceof Error ? a.message : `${a.status} ${a.body}`}`,
          );
        else refreshed.push(targets[i]!);
        await sleep(20);
      }
    })();
    const exits: (number | null)[] = [];
    for (const r of w.replicas) {
      await sleep(1000);
      exits.push(await r.stop());
      await sleep(500); // down for a moment: nginx sends everything to the other two
      await r.start();
    }
    await sleep(1000);
    running = false;
    await Promise.all([syncer, refresher]);
    expect(exits).toEqual([0, 0, 0]);
    expect(problems, storeFailures(w.replicas, marks).join("; ")).toEqual([]);
    expect(refreshed.length).toBeGreaterThan(20);
    // Every refresh that was accepted reaches the client.
    const rest = await syncUntil(
      front,
      jo,
      pos,
      refreshed.filter((u) => !seen.has(u)),
    );
    for (const u of rest) seen.add(u);
    expect(refreshed.filter((u) => !seen.has(u))).toEqual([]);
  }, 180_000);
});
