// The audit's schedule: every tracked remote user once per interval, evenly spread, never faster
// than the budget, our own users skipped, and the lag reported when the budget cannot keep up.
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import type { SharedLease } from "../../src/cluster/cluster.ts";
import { createLogger } from "../../src/observe/log.ts";
import { Audit } from "../../src/resync/audit.ts";
import type { Resyncer } from "../../src/resync/resyncer.ts";
import type { Store } from "../../src/store/store.ts";

/** One lease row as PostgreSQL keeps it (cluster/pg-lease.ts), shared by in-process "replicas". */
function leaseRow(leaseMs: number) {
  const row = { holder: undefined as string | undefined, expiresAt: 0, state: null as string | null };
  const free = (me: string) => row.holder === undefined || row.holder === me || row.expiresAt <= Date.now();
  return (me: string): SharedLease => ({
    claimEveryMs: leaseMs / 3,
    claim: async () => {
      if (!free(me)) return false;
      Object.assign(row, { holder: me, expiresAt: Date.now() + leaseMs });
      return { state: row.state };
    },
    save: async (state) => {
      if (row.holder !== me) return false;
      Object.assign(row, { state, expiresAt: Date.now() + leaseMs });
      return true;
    },
    release: async () => {
      if (row.holder === me) row.holder = undefined;
    },
  });
}

function world(targets: string[], intervalMs: number, maxPerSecond: number, lease?: SharedLease) {
  const checks: [number, string][] = [];
  const sorted = [...targets].sort();
  const store = {
    countTrackedTargets: () => sorted.length,
    trackedTargetsAfter: (after: string, limit: number) => sorted.filter((t) => t > after).slice(0, limit),
  } as unknown as Store;
  const resyncer = { background: (t: string) => (checks.push([Date.now(), t]), "started") } as unknown as Resyncer;
  const audit = new Audit({
    store,
    resyncer,
    serverName: "hs.test",
    intervalMs,
    maxPerSecond,
    log: createLogger("error"),
    lease,
  });
  return { audit, checks };
}

describe("the audit", () => {
  beforeEach(() => void vi.useFakeTimers({ now: 0 }));
  afterEach(() => void vi.useRealTimers());

  test("each remote user once per interval, evenly spread; local users skipped", async () => {
    const remote = Array.from({ length: 10 }, (_, i) => `@u${i}:remote.test`);
    const { audit, checks } = world([...remote, "@me:hs.test"], 10_000, 100);
    audit.start();
    await vi.advanceTimersByTimeAsync(30_500);
    audit.stop();
    for (const u of remote) {
      const at = checks.filter(([, t]) => t === u).map(([a]) => a);
      expect(at.length).toBeGreaterThanOrEqual(3);
      expect(at[1]! - at[0]!).toBe(at[2]! - at[1]!);
      // One interval, less the slot of the local user (counted in the pass, then skipped).
      expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(9_000);
      expect(at[1]! - at[0]!).toBeLessThanOrEqual(10_000);
    }
    expect(checks.some(([, t]) => t === "@me:hs.test")).toBe(false);
    const gaps = checks.slice(1).map(([a], i) => a - checks[i]![0]);
    expect(Math.max(...gaps) - Math.min(...gaps)).toBeLessThanOrEqual(1_000);
  });

  test("never faster than the budget, and the lag shows when it cannot keep up", async () => {
    const { audit, checks } = world(
      Array.from({ length: 100 }, (_, i) => `@u${String(i).padStart(3, "0")}:remote.test`),
      10_000,
      2,
    );
    audit.start();
    await vi.advanceTimersByTimeAsync(20_000);
    expect(checks.length).toBeLessThanOrEqual(40);
    expect(checks.length).toBeGreaterThanOrEqual(39);
    expect(audit.behindSeconds()).toBeGreaterThan(0);
    audit.stop();
  });

  test("an interval of 0 never starts", async () => {
    const { audit, checks } = world(["@u:remote.test"], 0, 2);
    audit.start();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(audit.enabled).toBe(false);
    expect(checks).toEqual([]);
  });

  test("replicas sharing the lease: one walks; a stopped holder's pass goes on where it stood", async () => {
    const users = Array.from({ length: 100 }, (_, i) => `@u${String(i).padStart(3, "0")}:remote.test`);
    const lease = leaseRow(3_000);
    const replicas = ["A", "B", "C"].map((me) => world(users, 10_000, 2, lease(me)));
    for (const r of replicas) r.audit.start();
    await vi.advanceTimersByTimeAsync(10_000);
    const walking = replicas.filter((r) => r.checks.length > 0);
    expect(walking.length).toBe(1);
    const first = walking[0]!;
    // One budget: 2 a second.
    expect(first.checks.length).toBeGreaterThanOrEqual(19);
    expect(first.checks.length).toBeLessThanOrEqual(21);
    await first.audit.stop();
    const done = first.checks.length;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(first.checks.length).toBe(done);
    const next = replicas.filter((r) => r !== first && r.checks.length > 0);
    expect(next.length).toBe(1);
    // Within a third of the lease, after the last user the stopped one checked.
    expect(next[0]!.checks[0]![0] - first.checks.at(-1)![0]).toBeLessThanOrEqual(1_000 + 500);
    const all = [...first.checks, ...next[0]!.checks].map(([, t]) => t);
    expect(all).toEqual(users.slice(0, all.length));
    for (const r of replicas) await r.audit.stop();
  });

  test("a holder cut off (killed: its lease neither renewed nor released) loses the walk once its lease expires", async () => {
    const users = Array.from({ length: 100 }, (_, i) => `@u${String(i).padStart(3, "0")}:remote.test`);
    const lease = leaseRow(3_000);
    let dead = false;
    const live = lease("A");
    const gone = () => Promise.reject(new Error("connection ended"));
    // As after the database sessions of a killed replica end: every call of its fails.
    const killable: SharedLease = {
      claimEveryMs: live.claimEveryMs,
      claim: () => (dead ? gone() : live.claim()),
      save: (state) => (dead ? gone() : live.save(state)),
      release: () => (dead ? gone() : live.release()),
    };
    const a = world(users, 10_000, 2, killable);
    const b = world(users, 10_000, 2, lease("B"));
    a.audit.start();
    b.audit.start();
    await vi.advanceTimersByTimeAsync(2_000);
    expect(a.checks.length).toBeGreaterThan(0);
    expect(b.checks).toEqual([]);
    dead = true;
    const done = a.checks.length;
    await vi.advanceTimersByTimeAsync(2_000);
    expect(a.checks.length).toBe(done);
    // Not before the lease (renewed by its last check) runs out.
    expect(b.checks).toEqual([]);
    await vi.advanceTimersByTimeAsync(3_000);
    expect(b.checks.length).toBeGreaterThan(0);
    expect(b.checks.map(([, t]) => t)).toEqual(users.slice(done, done + b.checks.length));
    await a.audit.stop();
    await b.audit.stop();
  });
});
