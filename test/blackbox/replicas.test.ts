// Issue 18: three compiled replicas on one PostgreSQL behind nginx (the block of
// docs/scaling.md, round robin) behave as one proxy, whichever replica a request lands on.
// Each test names the bullet of the issue it proves. Failures of replicas and of the database
// are in replicas-failures.test.ts.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { call } from "../helpers/http-call.ts";
import {
  changedIn,
  type HsDevices,
  type ReplicaWorld,
  servedBy,
  startReplicaWorld,
  storeFailures,
} from "./replicas-world.ts";

let w: ReplicaWorld & { hsDevices: HsDevices };
let A: number, B: number, C: number, front: number;
const user = (local: string) => `@${local}:${w.remote.serverName}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  // The refresh cache off: every refresh of these tests goes to federation unless it shares
  // a fetch already running, which is what is counted.
  w = await startReplicaWorld({ extra: ["--refresh-cache-ms", "0", "--refresh-wait-ms", "30000"] });
  [A, B, C] = w.replicas.map((r) => r.port) as [number, number, number];
  front = w.nginx.port;
}, 180_000);
afterAll(() => w?.close(), 60_000);

describe("nginx in front of three replicas (docs/scaling.md)", () => {
  test("the doc's block passes nginx -t and spreads requests over every replica, round robin", async () => {
    expect(w.nginx.check().ok).toBe(true);
    const token = w.login("spread");
    const answers = await Promise.all(
      Array.from({ length: 9 }, () => call(front, "GET", "/_matrix/client/v3/account/whoami", { token })),
    );
    expect(answers.map((a) => a.status)).toEqual(Array(9).fill(200));
    expect(servedBy(w.nginx, w.replicas, "/account/whoami")).toEqual([3, 3, 3]);
  });
});

describe("one fetch", () => {
  test("1,000 concurrent refreshes of one user over three replicas → exactly 1 federation request", async () => {
    const target = makeUser(user("popular"), { devices: 3 });
    w.remote.setUser(target);
    w.remote.resetStats();
    const tokens = Array.from({ length: 1000 }, (_, i) => w.login(`fan${i}`));
    const held = w.remote.hold({ userId: target.userId });
    const listed = () => w.hs.seen.filter((s) => s.target === "/_matrix/client/v3/devices").length;
    const before = listed();
    let answered = 0;
    const all = Promise.all(tokens.map((t) => w.refresh(front, target.userId, t).finally(() => void answered++)));
    // A refresh lists its requester's devices just before it joins the fetch: hold the one
    // fetch until every refresh is inside a replica (or already answered: a refusal is
    // reported below), so all 1,000 overlap it.
    await expect
      .poll(() => listed() - before + answered, { timeout: 90_000, interval: 50 })
      .toBeGreaterThanOrEqual(1000);
    await sleep(500);
    held.release();
    const answers = await all;
    const statuses = new Map<number, number>();
    for (const a of answers) statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
    const other = answers.find((a) => a.status !== 202);
    expect(
      Object.fromEntries(statuses),
      other && `e.g. ${other.status} ${other.body}; ${storeFailures(w.replicas).join("; ")}`,
    ).toEqual({ 202: 1000 });
    expect(w.remote.count({ userId: target.userId, endpoint: "devices" })).toBe(1);
    // Every replica took its share of the storm.
    const spread = servedBy(w.nginx, w.replicas, encodeURIComponent(target.userId));
    expect(spread.every((n) => n >= 300)).toBe(true);
  }, 180_000);

  test("at most 3 federation requests in flight to one destination across all replicas", async () => {
    const targets = Array.from({ length: 30 }, (_, i) => makeUser(user(`dest${i}`), { devices: 1 }));
    for (const t of targets) w.remote.setUser(t);
    w.remote.resetStats();
    // The remote answers what it holds every 50 ms, so fetches overlap and only the cap bounds them.
    let tick = w.remote.hold({ endpoint: "devices" });
    const ticker = setInterval(() => {
      const next = w.remote.hold({ endpoint: "devices" });
      tick.release();
      tick = next;
    }, 50);
    try {
      const answers = await Promise.all(targets.map((t, i) => w.refresh(front, t.userId, w.login(`dst${i}`))));
      const other = answers.find((a) => a.status !== 202);
      expect(
        answers.map((a) => a.status),
        other && `e.g. ${other.status} ${other.body}`,
      ).toEqual(Array(30).fill(202));
    } finally {
      clearInterval(ticker);
      tick.release();
    }
    expect(w.remote.maxInFlight).toBeGreaterThan(0);
    expect(w.remote.maxInFlight).toBeLessThanOrEqual(3);
    // One fetch per target: any fetched twice is named.
    const fetched = w.remote.requests.filter((r) => r.authorized && r.endpoint === "devices").map((r) => r.userId);
    expect(fetched.filter((u, i) => fetched.indexOf(u) !== i)).toEqual([]);
    expect(fetched).toHaveLength(30);
  }, 120_000);
});

describe("limits hold across replicas", () => {
  test("the 11th refresh of a requester's burst gets 429, whichever replica serves it", async () => {
    const token = w.login("burster");
    for (let i = 0; i < 11; i++) w.remote.setUser(makeUser(user(`burst${i}`), { devices: 1 }));
    const answers = [];
    // One after the other through nginx: round robin puts them on A, B, C, A, …
    for (let i = 0; i < 11; i++) answers.push(await w.refresh(front, user(`burst${i}`), token));
    expect(answers.map((a) => a.status)).toEqual([...Array(10).fill(202), 429]);
    const limited = answers[10]!;
    expect(limited.json).toMatchObject({ errcode: "M_LIMIT_EXCEEDED" });
    expect(Number(limited.headers["retry-after"])).toBeGreaterThan(0);
    // Whichever replica: the same requester is refused directly on each of them too.
    for (const port of [A, B, C]) expect((await w.refresh(port, user("burst0"), token)).status).toBe(429);
  }, 60_000);

  test("a target's limit (burst 3) holds across replicas: the 4th fetch of it gets 429", async () => {
    const target = user("hot");
    w.remote.setBehaviour({ kind: "status", status: 403 }, { userId: target }); // a final failure: never cached
    const statuses = [];
    for (const [i, port] of [A, B, C, A, B, C].entries())
      statuses.push((await w.refresh(port, target, w.login(`hot${i}`))).status);
    expect(statuses).toEqual([502, 502, 502, 429, 429, 429]);
    expect(w.remote.count({ userId: target, endpoint: "devices" })).toBe(3);
  }, 60_000);
});

describe("wake", () => {
  test("a refresh answered by replica A wakes a /sync long-poll held by replica B", async () => {
    const target = user("waker");
    w.remote.setUser(makeUser(target, { devices: ["W1"] }));
    const alice = w.login("alice", "ALICE1");
    expect((await w.keysQuery(B, alice, [target])).status).toBe(200); // alice tracks the target
    const initial = await w.sync(B, alice);
    const since = String(initial.json?.next_batch);
    // Far longer than this test may take: only the refresh can end it in time.
    const poll = w.sync(B, alice, since, 600_000);
    await expect
      .poll(() => w.hs.seen.some((s) => s.target.includes(`since=${since}`) && s.target.includes("timeout=600000")))
      .toBe(true);
    const refreshed = await w.refresh(A, target, w.login("wakerequester"));
    expect(refreshed.status).toBe(202);
    const woken = await poll;
    expect(woken.status).toBe(200);
    expect(changedIn(woken)).toContain(target);
  }, 60_000);
});

describe("acks", () => {
  test("a /sync on another replica acknowledges and injects as on the same one; nothing lost or repeated", async () => {
    const target = user("acked");
    w.remote.setUser(makeUser(target, { devices: ["K1"] }));
    const bea = w.login("bea", "BEA1");
    expect((await w.keysQuery(A, bea, [target])).status).toBe(200);
    const start = String((await w.sync(A, bea)).json?.next_batch);
    // B has served this device already, with nothing pending: nothing B keeps from that answer
    // may hide the change that comes next.
    expect(changedIn(await w.sync(B, bea, start))).not.toContain(target);
    expect((await w.refresh(C, target, w.login("ackrequester"))).status).toBe(202);

    // Injected by B, from a position A handed out: the fan-out is committed before C's 202, so
    // the first /sync on any replica after it carries the change, as in one process.
    const onB = await w.sync(B, bea, start);
    expect(changedIn(onB)).toContain(target);
    const x = String(onB.json?.next_batch);
    // That answer was lost: the same position on C injects it again.
    const onC = await w.sync(C, bea, start);
    expect(changedIn(onC)).toContain(target);
    // A acknowledges B's answer by its position: not again, on any replica, from then on.
    const acked = await w.sync(A, bea, x);
    expect(acked.status).toBe(200);
    expect(changedIn(acked)).not.toContain(target);
    let pos = String(acked.json?.next_batch);
    for (const port of [B, C, A]) {
      const next = await w.sync(port, bea, pos);
      expect(changedIn(next)).not.toContain(target);
      pos = String(next.json?.next_batch);
    }
    // A new change is delivered again: nothing lost after the acknowledgement.
    w.remote.setUser(makeUser(target, { devices: ["K1", "K2"] }));
    expect((await w.refresh(B, target, w.login("ackrequester2"))).status).toBe(202);
    expect(changedIn(await w.sync(C, bea, pos))).toContain(target);
  }, 60_000);
});

describe("caches", () => {
  const devicesOf = (a: { json?: Record<string, unknown> }, u: string) =>
    Object.keys((a.json?.device_keys as Record<string, object> | undefined)?.[u] ?? {}).sort();

  test("snapshots and overlays: a refresh on one replica is served at once by the others", async () => {
    const target = user("cached");
    w.remote.setUser(makeUser(target, { devices: ["D1"] }));
    const cat = w.login("cat", "CAT1");
    expect((await w.refresh(A, target, w.login("cacher1"))).status).toBe(202);
    // B and C serve the overlay (and keep it in memory).
    for (const port of [B, C]) expect(devicesOf(await w.keysQuery(port, cat, [target]), target)).toEqual(["D1"]);
    w.remote.setUser(makeUser(target, { devices: ["D1", "D2"] }));
    expect((await w.refresh(A, target, w.login("cacher2"))).status).toBe(202);
    // B and C drop what they held once A's change reaches them through the database.
    for (const port of [B, C, A])
      await expect
        .poll(async () => devicesOf(await w.keysQuery(port, cat, [target]), target), { timeout: 5000 })
        .toEqual(["D1", "D2"]);
  }, 60_000);

  test("the homeserver's view: learned on one replica, used by the others", async () => {
    const target = makeUser(user("viewed"), { devices: ["V1"] });
    w.remote.setUser(target);
    const dan = w.login("dan", "DAN1");
    // The homeserver knows V1; B sees it serve that (B keeps that view in memory).
    w.hsDevices.set(target.userId, { V1: target.devices[0]!.keys! });
    expect(devicesOf(await w.keysQuery(B, dan, [target.userId]), target.userId)).toEqual(["V1"]);
    const since = String((await w.sync(B, dan)).json?.next_batch);
    // Then the homeserver loses it, and A sees it serve nothing for the user.
    w.hsDevices.set(target.userId, {});
    expect(devicesOf(await w.keysQuery(A, dan, [target.userId]), target.userId)).toEqual([]);
    // Views are written in batches, within a second (src/delivery/views.ts).
    await sleep(2500);
    // A refresh on B: the remote's V1 differs from what the homeserver now serves (nothing),
    // so dan is told. B deciding from its old view (V1) would tell no one.
    expect((await w.refresh(B, target.userId, w.login("viewer"))).status).toBe(202);
    expect(changedIn(await w.sync(C, dan, since))).toContain(target.userId);
  }, 60_000);
});
