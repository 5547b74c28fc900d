// The resyncer's memory of recent outcomes (src/resync/recent-outcomes.ts, the cache window of
// --refresh-cache-ms): an outcome older than the window answers nothing, so it is not kept. The
// audit walks every tracked user once a pass; before, each check's whole snapshot stayed held
// up to 50,000 users (docs/performance.md, ninth session: ~4 KB a one-device user).
import { afterAll, expect, test } from "vitest";
import { createLogger } from "../../src/observe/log.ts";
import { Resyncer } from "../../src/resync/resyncer.ts";
import { closeTestStores, freshDatabase, openDatabase } from "../helpers/stores.ts";

afterAll(closeTestStores);

async function world(refreshCacheMs: number, devices = 1) {
  let clock = 1_000_000;
  const fetched: string[] = [];
  const free = { take: () => 0 };
  const resyncer = new Resyncer({
    store: await openDatabase(await freshDatabase("sqlite")),
    serverName: "hs.test",
    fetchDevices: async (userId) => {
      fetched.push(userId);
      const list = Object.fromEntries(Array.from({ length: devices }, (_, i) => [`D${i}`, { device_id: `D${i}` }]));
      return { snapshot: { userId, streamId: 1, devices: list, fetchedAt: clock } };
    },
    refreshCacheMs,
    retry: { initialMs: 1000, maxMs: 10_000 },
    maxAttempts: 3,
    probeIntervalMs: 1000,
    limits: { requester: free, target: free },
    log: createLogger("error", () => {}),
    now: () => clock,
  });
  return { resyncer, fetched, tick: (ms: number) => void (clock += ms) };
}

test("an audit's walk at one check a second keeps only the outcomes of the cache window", async () => {
  const { resyncer, tick } = await world(30_000);
  for (let i = 0; i < 300; i++) {
    await resyncer.run(`@u${i}:remote.test`, [], { trigger: "audit", retry: false });
    tick(1_000);
  }
  // 30 s at one a second (the old ones are looked for once a second), not 300.
  expect(resyncer.recentOutcomes).toBeLessThanOrEqual(32);
  expect(resyncer.recentOutcomes).toBeGreaterThanOrEqual(29);
});

test("within the window a check still costs nothing; past it, the next one fetches", async () => {
  const { resyncer, fetched, tick } = await world(30_000);
  await resyncer.run("@bob:remote.test", [], { trigger: "audit", retry: false });
  tick(10_000);
  // Other users' outcomes landing meanwhile do not push bob's out while it is within the window.
  for (let i = 0; i < 5; i++) await resyncer.run(`@u${i}:remote.test`, [], { trigger: "audit", retry: false });
  expect(await resyncer.background("@bob:remote.test", { trigger: "audit" })).toBe("cached");
  tick(25_000);
  await resyncer.run("@carol:remote.test", [], { trigger: "audit", retry: false });
  // Bob's window is over (read since the others landed, so not the least recently used); the
  // others' (25 s) and carol's are not.
  expect(resyncer.recentOutcomes).toBe(6);
  expect(await resyncer.background("@bob:remote.test", { trigger: "audit" })).toBe("started");
  await expect.poll(() => fetched.filter((u) => u === "@bob:remote.test").length).toBe(2);
});

test("with no cache window (--refresh-cache-ms 0), outcomes are still there for the fetch's own callers, not kept", async () => {
  const { resyncer, tick } = await world(0);
  for (let i = 0; i < 100; i++) {
    await resyncer.run(`@u${i}:remote.test`, [], { trigger: "audit", retry: false });
    tick(1_000);
  }
  expect(resyncer.recentOutcomes).toBeLessThanOrEqual(7);
  // A refresh still learns what its own fetch found.
  const r = await resyncer.refresh("@dan:remote.test", "@alice:hs.test", 5_000);
  expect(r).toMatchObject({ kind: "ok", fromCache: false, changed: true });
});

test("a burst of 1000-device lists within one window is bounded by devices, not only by users", async () => {
  const { resyncer, fetched } = await world(30_000, 1000);
  for (let i = 0; i < 60; i++) await resyncer.run(`@big${i}:remote.test`, [], { trigger: "to_device", retry: false });
  // 60 lists of 1000 devices landed within the window: at most 20 of them are held.
  expect(resyncer.recentDevices).toBeLessThanOrEqual(20 * 1001);
  expect(resyncer.recentOutcomes).toBe(20);
  // The latest are the ones held. A check of one dropped still costs no fetch within the window:
  // its changed list was stored, and the stored snapshot answers.
  expect(await resyncer.background("@big59:remote.test", { trigger: "audit" })).toBe("cached");
  expect(await resyncer.background("@big0:remote.test", { trigger: "audit" })).toBe("cached");
  expect(fetched.length).toBe(60);
});
