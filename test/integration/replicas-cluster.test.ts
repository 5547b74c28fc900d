// Several proxy instances on one PostgreSQL behave as one process (docs/architecture.md
// "Cross-replica coordination"): one federation fetch, shared rate limits and destination
// slots, a refresh on one replica waking a long-poll held by another, caches invalidated
// everywhere, and a killed replica's lease taken over. Real sockets throughout: the fake
// homeserver, the fake remote over HTTPS, three proxies.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import postgres from "postgres";
import { PgCluster } from "../../src/cluster/pg-cluster.ts";
import { startProxy, type RunningProxy } from "../../src/commands/serve.ts";
import { createLogger } from "../../src/observe/log.ts";
import { makeUser } from "../helpers/fake-devices.ts";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { startFakeRemote, type FakeRemote } from "../helpers/fake-remote.ts";
import { startPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { testConfig, type TestEngine } from "../helpers/proxy.ts";
import { createTestCa, type TestCa } from "../helpers/tls.ts";
import { OUR_KEY_ID, OUR_PUBLIC_KEY } from "../helpers/world.ts";

const LEASE_MS = 1_500;
const log = createLogger("error", () => {});

interface Replica {
  proxy: RunningProxy;
  cluster: PgCluster;
  url: string;
}

let pg: TestPostgres;
let dbUrl: string;
let hs: FakeHomeserver;
let remote: FakeRemote;
let ca: TestCa;
let caPath: string;
const replicas: Replica[] = [];
let n = 0;

// The cluster is opened here rather than by startProxy only to shorten its lease (a crash is
// simulated below) and to see whether it listens; its deadline is long because three replicas,
// the fakes and a thousand clients share this one event loop.
async function startReplica(engine: TestEngine = "auto", cacheMs = 60_000): Promise<Replica> {
  const cluster = await PgCluster.open({ url: dbUrl, log, leaseMs: LEASE_MS, deadlineMs: 10_000 });
  const config = testConfig(
    hs.url,
    [
      "--federation-ca",
      caPath,
      "--federation-allow-cidrs",
      "127.0.0.0/8",
      "--database",
      dbUrl,
      "--database-timeout-ms",
      "10000",
      "--refresh-wait-ms",
      "3000",
      "--refresh-cache-ms",
      String(cacheMs),
    ],
    engine,
  );
  const proxy = await startProxy(config, log, { cluster });
  const r = { proxy, cluster, url: `http://${proxy.address}` };
  replicas.push(r);
  return r;
}

const user = (name: string) => `@${name}:${remote.serverName}`;
function login(localpart: string, deviceId = `${localpart.toUpperCase()}DEV`): string {
  const token = `token_${localpart}_${deviceId}`;
  hs.tokens.set(token, [`@${localpart}:hs.test`, deviceId]);
  return token;
}
const refresh = (r: Replica, target: string, token: string) =>
  fetch(`${r.url}/_matrix/client/v3/user/${encodeURIComponent(target)}/devices/refresh`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: "{}",
  });
const sync = async (r: Replica, token: string, since?: string, timeout = 0) => {
  const res = await fetch(
    `${r.url}/_matrix/client/v3/sync?timeout=${timeout}${since ? `&since=${encodeURIComponent(since)}` : ""}`,
    { headers: { authorization: `Bearer ${token}` } },
  );
  return (await res.json()) as { next_batch: string; device_lists?: { changed?: string[] } };
};

beforeAll(async () => {
  pg = await startPostgres();
  dbUrl = await pg.createDatabase("replicas");
  ca = createTestCa();
  const dir = mkdtempSync(join(tmpdir(), "replicas-"));
  caPath = join(dir, "ca.pem");
  writeFileSync(caPath, ca.caPem);
  hs = await startFakeHomeserver("hs.test");
  // The homeserver's own answer knows no device of anyone: every fresh list is news.
  hs.on(
    "/_matrix/client/v3/keys/query",
    (_req, res) => void res.end(JSON.stringify({ device_keys: {}, failures: {} })),
  );
  remote = await startFakeRemote({ ca, trustedKeys: { "hs.test": { [OUR_KEY_ID]: OUR_PUBLIC_KEY } } });
  for (let i = 0; i < 3; i++) await startReplica();
});

afterAll(async () => {
  for (const r of replicas) await r.proxy.close(1_000).catch(() => {});
  await remote?.close();
  await hs?.close();
  ca?.cleanup();
  await pg?.close();
});

describe("replicas on one PostgreSQL", () => {
  test("1,000 concurrent refreshes of one user over 3 replicas make exactly 1 federation request", async () => {
    const target = user(`many${++n}`);
    remote.setUser(makeUser(target, { devices: 2 }));
    const held = remote.hold({ userId: target });
    // 100 requesters × 10 refreshes (each requester's burst), spread over the replicas.
    const tokens = Array.from({ length: 100 }, (_, i) => login(`asker${n}x${i}`));
    const answers = Array.from({ length: 1_000 }, (_, i) => refresh(replicas[i % 3]!, target, tokens[i % 100]!));
    await remote.waitFor(() => remote.inFlight > 0, 20_000);
    await new Promise((r) => setTimeout(r, 500)); // every replica has asked by now
    held.release();
    const statuses = await Promise.all(
      answers.map(async (p) => {
        const r = await p;
        return r.status === 202 ? 202 : `${r.status} ${await r.text()}`;
      }),
    );
    expect(statuses.filter((s) => s !== 202).slice(0, 3)).toEqual([]);
    // Later refreshes on any replica are answered from the outcome that landed.
    for (const r of replicas) expect((await refresh(r, target, login(`late${n}`))).status).toBe(202);
    expect(remote.count({ userId: target, endpoint: "devices" })).toBe(1);
  });

  test("a requester's burst of 10 holds across replicas: the 11th refresh gets 429 whichever replica serves it", async () => {
    const token = login(`burst${++n}`);
    for (let i = 0; i < 10; i++) {
      const t = user(`b${n}t${i}`);
      remote.setUser(makeUser(t));
      expect((await refresh(replicas[i % 3]!, t, token)).status).toBe(202);
    }
    for (const r of replicas) {
      const res = await refresh(r, user(`b${n}extra`), token);
      expect(res.status).toBe(429);
      expect((await res.json()).errcode).toBe("M_LIMIT_EXCEEDED");
      expect(res.headers.get("retry-after")).not.toBeNull();
    }
  });

  test("a target's burst of 3 fetches holds across replicas: the 4th refresh gets 429 whichever replica serves it", async () => {
    // Replicas without the refresh cache: every refresh past the limits is a fetch.
    const uncached = [await startReplica("auto", 0), await startReplica("auto", 0), await startReplica("auto", 0)];
    const target = user(`hot${++n}`);
    remote.setUser(makeUser(target));
    for (let i = 0; i < 3; i++) expect((await refresh(uncached[i]!, target, login(`fan${n}x${i}`))).status).toBe(202);
    for (const r of uncached) {
      const res = await refresh(r, target, login(`fan${n}late`));
      expect(res.status).toBe(429);
      expect((await res.json()).errcode).toBe("M_LIMIT_EXCEEDED");
    }
    expect(remote.count({ userId: target, endpoint: "devices" })).toBe(3);
  });

  test("at most 3 fetches in flight per destination across all replicas", async () => {
    const targets = Array.from({ length: 9 }, (_, i) => user(`slot${++n}t${i}`));
    for (const t of targets) remote.setUser(makeUser(t));
    const held = targets.map((t) => remote.hold({ userId: t }));
    remote.resetStats();
    const answers = targets.map((t, i) => refresh(replicas[i % 3]!, t, login(`slotter${n}x${i}`)));
    await remote.waitFor(() => remote.inFlight === 3);
    await new Promise((r) => setTimeout(r, 300)); // a fourth would have arrived by now
    expect(remote.maxInFlight).toBe(3);
    for (const h of held) h.release();
    await Promise.all(answers);
    await remote.waitFor(() => targets.every((t) => remote.count({ userId: t, endpoint: "devices" }) === 1), 10_000);
    expect(remote.maxInFlight).toBe(3);
  });

  test.each(["bun", "node"] as const)(
    "a refresh answered by one replica wakes the long-poll another replica (engine %s) holds",
    async (engine) => {
      const target = user(`wake${++n}`);
      remote.setUser(makeUser(target, { devices: 3 }));
      const token = login(`waker${n}`);
      const a = replicas[0]!;
      const b = engine === "bun" ? replicas[1]! : await startReplica("node");
      const first = await sync(b!, token);
      const poll = sync(b!, token, first.next_batch, 20_000);
      await expect
        .poll(() =>
          hs.seen.some((s) => s.target.includes(`since=${first.next_batch}`) && s.target.includes("timeout=20000")),
        )
        .toBe(true); // B holds it
      expect((await refresh(a!, target, token)).status).toBe(202);
      const woken = await poll;
      expect(woken.device_lists?.changed).toEqual([target]);
      // Acknowledged on the next request, whichever replica gets it.
      const next = await sync(replicas[2]!, token, woken.next_batch);
      expect(next.device_lists?.changed ?? []).toEqual([]);
    },
  );

  test("a late notification for rows already acknowledged does not answer a long-poll early", async () => {
    const target = user(`late${++n}`);
    remote.setUser(makeUser(target, { devices: 2 }));
    const token = login(`lately${n}`);
    const [a, b] = replicas as [Replica, Replica];
    const first = await sync(b, token);
    const poll = sync(b, token, first.next_batch, 20_000);
    await expect
      .poll(() =>
        hs.seen.some((s) => s.target.includes(`since=${first.next_batch}`) && s.target.includes("timeout=20000")),
      )
      .toBe(true);
    // As a notification of an earlier delivery, already acknowledged, arriving late: nothing is
    // pending for the device, so its poll keeps waiting for the refresh below.
    a.cluster.publish({ kind: "pending", devices: [`@lately${n}:hs.test|LATELY${n}DEV`] });
    await a.cluster.flush();
    expect((await refresh(a, target, token)).status).toBe(202);
    expect((await poll).device_lists?.changed).toEqual([target]);
  });

  test("a replica whose bus session was lost re-checks every held long-poll once it listens again", async () => {
    const target = user(`missed${++n}`);
    const token = login(`misser${n}`);
    const b = replicas[1]!;
    const first = await sync(b, token);
    const poll = sync(b, token, first.next_batch, 20_000);
    await expect
      .poll(() =>
        hs.seen.some((s) => s.target.includes(`since=${first.next_batch}`) && s.target.includes("timeout=20000")),
      )
      .toBe(true);
    // A row whose notification B never got (written straight into the shared store).
    await b.proxy.services.store.addPending([{ userId: `@misser${n}:hs.test`, deviceId: `MISSER${n}DEV`, target }]);
    const admin = postgres(dbUrl, { max: 1, onnotice: () => {} });
    try {
      const killed = await admin`SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
        WHERE application_name = ${`mrp-bus ${b.cluster.holder}`.slice(0, 63)}`;
      expect(killed.length).toBe(1);
    } finally {
      await admin.end();
    }
    expect((await poll).device_lists?.changed).toEqual([target]);
  });

  test("a snapshot or a view written by one replica is what every replica serves next", async () => {
    const target = user(`cache${++n}`);
    const [a, b] = replicas as [Replica, Replica];
    // B has read (and cached) the absence of a view and a snapshot first.
    expect(await b.proxy.services.heal!.views.get(target)).toBeUndefined();
    expect((await b.proxy.services.overlays.servable([target])).size).toBe(0);
    remote.setUser(makeUser(target, { devices: 2 }));
    expect((await refresh(a, target, login(`cacher${n}`))).status).toBe(202);
    await expect
      .poll(async () => (await b.proxy.services.overlays.servable([target])).get(target)?.devices)
      .toHaveProperty("DEV1");
    // A view A learns and writes replaces the one B has cached.
    const views = a.proxy.services.heal!.views;
    const seenAtB = () =>
      expect.poll(
        async () => {
          await views.flush(); // written behind (views.ts): now rather than in a second
          return (await b.proxy.services.heal!.views.get(target))?.devices;
        },
        { timeout: 5_000 },
      );
    views.record([{ userId: target, devices: { X: { "ed25519:X": "one" } }, seenAt: Date.now() }]);
    await seenAtB().toEqual({ X: { "ed25519:X": "one" } }); // now in B's cache
    views.record([{ userId: target, devices: { X: { "ed25519:X": "two" } }, seenAt: Date.now() }]);
    await seenAtB().toEqual({ X: { "ed25519:X": "two" } });
  });

  test("a replica killed in the middle of a fetch: another takes the fetch over when its lease expires", async () => {
    const target = user(`crash${++n}`);
    remote.setUser(makeUser(target, { devices: 2 }));
    remote.setBehaviour({ kind: "hang" }, { userId: target });
    const doomed = await startReplica();
    const first = refresh(doomed, target, login(`crasher${n}`));
    await remote.waitFor(() => remote.count({ userId: target, endpoint: "devices" }) === 1);
    // As after kill -9: its lease is neither renewed nor released.
    await doomed.cluster.close();
    replicas.splice(replicas.indexOf(doomed), 1);
    remote.setBehaviour({ kind: "serve" }, { userId: target }); // the next fetch is answered
    const res = await refresh(replicas[0]!, target, login(`survivor${n}`));
    expect(res.status).toBe(202);
    expect(remote.count({ userId: target, endpoint: "devices" })).toBe(2);
    expect((await replicas[0]!.proxy.services.store.getSnapshot(target))?.devices).toHaveProperty("DEV1");
    await first.catch(() => {});
    await doomed.proxy.close(500).catch(() => {});
  });

  test("PostgreSQL down: refreshes answer 503 with Retry-After, /sync still works, and all resumes after", async () => {
    const token = login(`down${++n}`);
    const target = user(`down${n}`);
    remote.setUser(makeUser(target));
    await pg.stop();
    try {
      const res = await refresh(replicas[0]!, target, token);
      expect(res.status).toBe(503);
      expect((await res.json()).errcode).toBe("M_UNKNOWN");
      expect(res.headers.get("retry-after")).not.toBeNull();
      expect((await sync(replicas[1]!, token)).next_batch).toBeTypeOf("string");
    } finally {
      await pg.start();
    }
    await expect.poll(() => replicas.every((r) => r.cluster.listening), { timeout: 15_000 }).toBe(true);
    expect((await refresh(replicas[1]!, target, token)).status).toBe(202);
  });
});
