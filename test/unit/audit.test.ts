// The audit's schedule: every tracked remote user once per interval, evenly spread, never faster
// than the budget, our own users skipped, and the lag reported when the budget cannot keep up.
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { createLogger } from "../../src/observe/log.ts";
import { Audit } from "../../src/resync/audit.ts";
import type { Resyncer } from "../../src/resync/resyncer.ts";
import type { Store } from "../../src/store/store.ts";

function world(targets: string[], intervalMs: number, maxPerSecond: number) {
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
});
