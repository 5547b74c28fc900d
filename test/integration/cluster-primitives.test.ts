// The cluster's primitives against a real PostgreSQL, two or three PgCluster instances on one
// database standing in for replicas.
import postgres from "postgres";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ClusterEvent } from "../../src/cluster/cluster.ts";
import { PgCluster } from "../../src/cluster/pg-cluster.ts";
import { pack } from "../../src/cluster/pg-bus.ts";
import { createLogger } from "../../src/observe/log.ts";
import { StoreUnavailable } from "../../src/store/store-guard.ts";
import { startPostgres, type TestPostgres } from "../helpers/postgres.ts";

const log = createLogger("error", () => {});
let pg: TestPostgres;
let n = 0;
const open: PgCluster[] = [];

beforeAll(async () => {
  pg = await startPostgres();
});
afterAll(async () => {
  await pg?.close();
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close().catch(() => {})));
});

async function replicas(count: number, o: { leaseMs?: number; deadlineMs?: number } = {}): Promise<PgCluster[]> {
  const url = await pg.createDatabase(`cluster_${++n}`);
  const out: PgCluster[] = [];
  for (let i = 0; i < count; i++) out.push(await PgCluster.open({ url, log, ...o }));
  open.push(...out);
  return out;
}

function events(c: PgCluster): ClusterEvent[] {
  const seen: ClusterEvent[] = [];
  c.subscribe((e) => seen.push(e));
  return seen;
}

async function until(cond: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("the bus", () => {
  it("carries pending devices, snapshots, views and scheduled retries to the other replicas, not back to the sender", async () => {
    const [a, b] = await replicas(2);
    const atA = events(a!);
    const atB = events(b!);
    a!.publish({ kind: "pending", devices: ["@u:x|D1", "@u:x|D2"] });
    a!.publish({ kind: "snapshots", users: ["@t:remote"] });
    a!.publish({ kind: "views", users: ["@v:remote"] });
    a!.publish({ kind: "retries" });
    await until(() => atB.length === 4);
    expect(atB).toEqual([
      { kind: "pending", devices: ["@u:x|D1", "@u:x|D2"] },
      { kind: "snapshots", users: ["@t:remote"] },
      { kind: "views", users: ["@v:remote"] },
      { kind: "retries" },
    ]);
    await new Promise((r) => setTimeout(r, 100));
    expect(atA).toEqual([]);
  });

  it("splits a fan-out of thousands of devices into payloads under NOTIFY's 8000 bytes, losing none", async () => {
    const devices = Array.from({ length: 5_000 }, (_, i) => `@user${i}:example.org|DEVICE${i}`);
    const payloads = pack("origin", new Map([["p", new Set(devices)]]));
    expect(payloads.length).toBeGreaterThan(1);
    for (const p of payloads) expect(Buffer.byteLength(p)).toBeLessThan(8000);
    const [a, b] = await replicas(2);
    const got = new Set<string>();
    b!.subscribe((e) => {
      if (e.kind === "pending") for (const d of e.devices) got.add(d);
    });
    a!.publish({ kind: "pending", devices });
    await until(() => got.size === devices.length);
  });

  it("resubscribes after PostgreSQL was down for a while, says so, and carries messages again", async () => {
    const [a, b] = await replicas(2);
    const atB = events(b!);
    // Down long enough for a first reconnection attempt to fail (the postgres package's own
    // listen() gives up on its channels then).
    await pg.stop();
    await new Promise((r) => setTimeout(r, 1_500));
    await pg.start();
    await until(() => atB.some((e) => e.kind === "resubscribed"), 15_000);
    await until(() => a!.listening, 15_000);
    a!.publish({ kind: "snapshots", users: ["@after:remote"] });
    await until(() => atB.some((e) => e.kind === "snapshots"), 10_000);
  });
});

describe("shared rate limits", () => {
  it("a burst of 10 holds across replicas: the 11th take fails whichever replica makes it", async () => {
    const rs = await replicas(3);
    const spec = { burst: 10, perSecond: 10 / 60 };
    const lims = rs.map((r) => r.limiter("requester", spec));
    const waits = await Promise.all(Array.from({ length: 10 }, (_, i) => lims[i % 3]!.take("@alice:x")));
    expect(waits).toEqual(Array(10).fill(0));
    for (const l of lims) expect(await l.take("@alice:x")).toBeGreaterThan(0);
    // Other keys and other bucket names are separate.
    expect(await lims[0]!.take("@bob:x")).toBe(0);
    expect(await rs[1]!.limiter("target", spec).take("@alice:x")).toBe(0);
  });

  it("a storm's takes on one replica are coalesced: a statement serves many requesters", async () => {
    // 1,000 refreshes by 1,000 requesters each took a token in a statement of its own, queued on
    // a few sessions past the deadline: whole shares of a storm answered 503 (issue 18).
    const [a] = await replicas(1);
    const url = pg.url.replace(/\/postgres$/, `/cluster_${n}`);
    const stats = postgres(url, { max: 1, onnotice: () => {} });
    const commits = async () =>
      Number(
        (await stats`SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`)[0]!.xact_commit,
      );
    try {
      const lim = a!.limiter("requester", { burst: 1, perSecond: 0.001 });
      const before = await commits();
      const first = await Promise.all(Array.from({ length: 500 }, (_, i) => lim.take(`@fan${i}:x`)));
      // The same keys again (each bucket now empty), twice in one batch for one of them.
      const again = await Promise.all([lim.take("@fan1:x"), lim.take("@fan1:x"), lim.take("@fan2:x")]);
      expect(first.every((w) => w === 0)).toBe(true);
      expect(again.every((w) => w > 0)).toBe(true);
      await a!.close();
      await new Promise((r) => setTimeout(r, 500));
      expect((await commits()) - before).toBeLessThan(100);
    } finally {
      await stats.end({ timeout: 1 });
    }
  });

  it("refills at the bucket's rate", async () => {
    const [a, b] = await replicas(2);
    const spec = { burst: 1, perSecond: 20 };
    expect(await a!.limiter("t", spec).take("k")).toBe(0);
    const wait = await b!.limiter("t", spec).take("k");
    expect(wait).toBeGreaterThan(0);
    expect(wait).toBeLessThanOrEqual(50);
    await new Promise((r) => setTimeout(r, wait + 20));
    expect(await b!.limiter("t", spec).take("k")).toBe(0);
  });
});

describe("single flight", () => {
  it("1,000 concurrent flights of one key over 3 replicas run once; every caller gets its outcome", async () => {
    const rs = await replicas(3);
    let runs = 0;
    const run = async () => {
      runs++;
      await new Promise((r) => setTimeout(r, 200));
      return { ok: true, result: "the list" };
    };
    const all = await Promise.all(Array.from({ length: 1_000 }, (_, i) => rs[i % 3]!.flight("@t:remote", run, 30_000)));
    expect(runs).toBe(1);
    expect(new Set(all.map((l) => `${l.ok}:${l.result}`))).toEqual(new Set(["true:the list"]));
  });

  it("an outcome within the fresh window is reused; past it, the next flight runs again", async () => {
    const [a, b] = await replicas(2);
    let runs = 0;
    const run = async () => ({ ok: false, result: `failure ${++runs}` });
    expect(await a!.flight("k", run, 10_000)).toEqual({ ok: false, result: "failure 1" });
    expect(await b!.flight("k", run, 10_000)).toEqual({ ok: false, result: "failure 1" });
    expect(await b!.flight("k", run, 0)).toEqual({ ok: false, result: "failure 2" });
  });

  it("a lease is taken and its outcome read while per-request statements fill the pool past the deadline", async () => {
    // A storm's per-request statements (rate-limit takes) must not queue the lease statements
    // past the deadline: that turned every joiner of a replica into a 503 (issue 18 storm).
    const [a, b] = await replicas(2, { deadlineMs: 800 });
    const limit = a!.limiter("requester", { burst: 10, perSecond: 1 });
    await limit.take("hot");
    const locker = postgres(pg.url.replace(/\/postgres$/, `/cluster_${n}`), { max: 1, onnotice: () => {} });
    let unlock!: () => void;
    const locked = new Promise<void>((r) => (unlock = r));
    let holding!: () => void;
    const held = new Promise<void>((r) => (holding = r));
    const tx = locker.begin(async (t) => {
      await t`SELECT 1 FROM cluster_buckets WHERE key = 'hot' FOR UPDATE`;
      holding();
      await locked;
    });
    try {
      await held;
      // Blocked on the row lock: they hold every session of a's statement pool.
      const stuck = Array.from({ length: 12 }, () => limit.take("hot").catch((e) => e));
      await new Promise((r) => setTimeout(r, 100));
      let release!: () => void;
      const fetching = new Promise<void>((r) => (release = r));
      const holder = b!.flight("@t:remote", async () => (await fetching, { ok: true, result: "from b" }), 0);
      await new Promise((r) => setTimeout(r, 100));
      const joiner = a!.flight("@t:remote", async () => ({ ok: true, result: "from a" }), 0);
      joiner.catch(() => {}); // asserted below
      // The joiner waits on b's fetch far longer than the deadline: that is not a database failure.
      await new Promise((r) => setTimeout(r, 1_500));
      release();
      expect(await holder).toEqual({ ok: true, result: "from b" });
      expect(await joiner).toEqual({ ok: true, result: "from b" });
      unlock();
      await Promise.all(stuck);
    } finally {
      unlock();
      await tx.catch(() => {});
      await locker.end({ timeout: 1 });
    }
  });

  it("a killed holder's lease expires and another replica takes over", async () => {
    const [a, b] = await replicas(2, { leaseMs: 600 });
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    void a!.flight("@t:remote", () => (started(), new Promise(() => {})), 0).catch(() => {});
    await running;
    await a!.close(); // no outcome lands, no renewal: as after kill -9
    let ran = 0;
    const out = await b!.flight("@t:remote", async () => ({ ok: true, result: `by b ${++ran}` }), 0);
    expect(out).toEqual({ ok: true, result: "by b 1" });
  });
});

describe("destination slots", () => {
  it("at most 3 in flight per destination across replicas; a killed holder's slot frees itself", async () => {
    const [a, b, c] = await replicas(3, { leaseMs: 600 });
    let now = 0;
    let max = 0;
    const job = async (r: PgCluster) => {
      const release = await r.slot("remote.example", 3);
      now++;
      max = Math.max(max, now);
      await new Promise((res) => setTimeout(res, 50));
      now--;
      release();
    };
    await Promise.all(Array.from({ length: 12 }, (_, i) => job([a, b][i % 2]!)));
    expect(max).toBe(3);
    // c takes all three and dies holding them: they come free after the lease.
    await Promise.all([0, 1, 2].map(() => c!.slot("dead.example", 3)));
    await c!.close();
    const release = await a!.slot("dead.example", 3);
    release();
  });
});

describe("destination slots in a storm", () => {
  it("a replica's own waiters are handed its freed slots: statements grow with the fetches, not their square", async () => {
    // 1,000 users of one destination on one replica: every waiter re-asking the database on
    // every release made a storm on PostgreSQL 8-10x slower than on SQLite.
    const [a] = await replicas(1);
    const url = pg.url.replace(/\/postgres$/, `/cluster_${n}`);
    const stats = postgres(url, { max: 1, onnotice: () => {} });
    const commits = async () =>
      Number(
        (await stats`SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`)[0]!.xact_commit,
      );
    try {
      const before = await commits();
      let now = 0;
      let max = 0;
      const jobs = 150;
      await Promise.all(
        Array.from({ length: jobs }, async () => {
          const release = await a!.slot("storm.example", 3);
          now++;
          max = Math.max(max, now);
          await new Promise((res) => setTimeout(res, 2));
          now--;
          release();
        }),
      );
      expect(max).toBe(3);
      await a!.close(); // its sessions' statistics are flushed as they end
      await new Promise((r) => setTimeout(r, 500));
      const spent = (await commits()) - before;
      expect(spent).toBeLessThan(jobs * 3);
    } finally {
      await stats.end({ timeout: 1 });
    }
  });
});

describe("when PostgreSQL is down", () => {
  it("calls fail fast as StoreUnavailable, and work again when it returns", async () => {
    const [a] = await replicas(1, { deadlineMs: 1_000 });
    const lim = a!.limiter("requester", { burst: 5, perSecond: 1 });
    expect(await lim.take("k")).toBe(0);
    await pg.stop();
    try {
      const t0 = performance.now();
      await expect(lim.take("k")).rejects.toBeInstanceOf(StoreUnavailable);
      await expect(a!.flight("x", async () => ({ ok: true, result: "" }), 0)).rejects.toBeInstanceOf(StoreUnavailable);
      await expect(a!.slot("d", 3)).rejects.toBeInstanceOf(StoreUnavailable);
      expect(performance.now() - t0).toBeLessThan(3_500);
    } finally {
      await pg.start();
    }
    await until(() => a!.listening, 15_000);
    expect(await lim.take("k")).toBe(0);
  });

  it("after an outage of several seconds, calls work again as soon as the database is back, not after a long back-off", async () => {
    // The client's own reconnect back-off grows to 20 s: a replica stayed degraded (503 to
    // refreshes) long after PostgreSQL returned (issue 18, rolling restart after a restart).
    const [a] = await replicas(1, { deadlineMs: 500 });
    const lim = a!.limiter("requester", { burst: 50, perSecond: 10 });
    expect(await lim.take("k")).toBe(0);
    await pg.stop();
    try {
      const end = performance.now() + 6_000;
      while (performance.now() < end) {
        await Promise.all([
          lim.take("k").catch(() => {}),
          a!.flight("x", async () => ({ ok: true, result: "" }), 0).catch(() => {}),
        ]);
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      await pg.start();
    }
    // Accepting connections now; the client's next attempt is at most a second away.
    await new Promise((r) => setTimeout(r, 1_200));
    expect(await lim.take("k")).toBe(0);
    expect(await a!.flight("y", async () => ({ ok: true, result: "back" }), 0)).toEqual({ ok: true, result: "back" });
  });
});
