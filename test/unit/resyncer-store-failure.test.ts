// A store that fails mid-fetch (after the remote answered, on clearing the destination's backoff)
// while the requester's booking is still being written: the refresh must reject with
// StoreUnavailable (the route answers 503 + Retry-After), and nothing may escape as an
// unhandled rejection, which a real process would log as a crash (observe/last-resort.ts).
import { afterAll, expect, test } from "vitest";
import { ServerJobs } from "../../src/admin/admin-jobs.ts";
import { createLogger } from "../../src/observe/log.ts";
import type { Cluster } from "../../src/cluster/cluster.ts";
import { Resyncer } from "../../src/resync/resyncer.ts";
import type { Store } from "../../src/store/store.ts";
import { StoreUnavailable } from "../../src/store/store-guard.ts";
import { closeTestStores, freshDatabase, openDatabase } from "../helpers/stores.ts";

afterAll(closeTestStores);

/** The store, except that these methods fail as a stopped PostgreSQL makes them fail. */
function failing(store: Store, methods: string[], overrides: Record<string, unknown> = {}): Store {
  return new Proxy(store, {
    get(t, k) {
      if (typeof k === "string" && k in overrides) return overrides[k];
      if (typeof k === "string" && methods.includes(k))
        return () =>
          Promise.reject(new StoreUnavailable(k, new Error("terminating connection due to administrator command")));
      const v = Reflect.get(t, k);
      return typeof v === "function" ? v.bind(t) : v;
    },
  });
}

test("a store failure mid-fetch while the booking is written: StoreUnavailable to the caller, no unhandled rejection", async () => {
  const escaped: unknown[] = [];
  const onEscape = (e: unknown) => void escaped.push(e);
  process.on("unhandledRejection", onEscape);
  const store = failing(await openDatabase(await freshDatabase("sqlite")), ["clearBackoff"]);
  const free = { take: () => 0 };
  const resyncer = new Resyncer({
    store,
    serverName: "hs.test",
    fetchDevices: async (userId) => ({ snapshot: { userId, streamId: 1, devices: {}, fetchedAt: Date.now() } }),
    refreshCacheMs: 0,
    retry: { initialMs: 1000, maxMs: 10_000 },
    maxAttempts: 3,
    probeIntervalMs: 1000,
    limits: { requester: free, target: free },
    log: createLogger("error", () => {}),
  });
  try {
    // The booking (tracking the requester's devices) is slower than the failing fetch.
    const slowBooking = async () => () => new Promise<void>((r) => setTimeout(r, 200));
    const outcome = resyncer.refresh("@bob:remote.test", "@alice:hs.test", 5_000, slowBooking);
    await expect(outcome).rejects.toBeInstanceOf(StoreUnavailable);
    // Joiners of the same flight see the same: the second one joins while the first still books.
    const first = resyncer.refresh("@carol:remote.test", "@alice:hs.test", 5_000, slowBooking);
    const joiner = resyncer.refresh("@carol:remote.test", "@dave:hs.test", 5_000, slowBooking);
    await expect(first).rejects.toBeInstanceOf(StoreUnavailable);
    await expect(joiner).rejects.toBeInstanceOf(StoreUnavailable);
    await new Promise((r) => setTimeout(r, 50));
    expect(escaped).toEqual([]);
  } finally {
    process.off("unhandledRejection", onEscape);
  }
});

test("an operator's server job on a failing store: counted as failed and finished, no unhandled rejection", async () => {
  const escaped: unknown[] = [];
  const onEscape = (e: unknown) => void escaped.push(e);
  process.on("unhandledRejection", onEscape);
  const store = failing(await openDatabase(await freshDatabase("sqlite")), ["clearBackoff", "getBackoff"], {
    trackedUsersOn: async () => ["@bob:remote.test", "@carol:remote.test"],
  });
  const resyncer = { run: async () => ({}) } as unknown as Resyncer;
  const jobs = new ServerJobs({ store, resyncer, log: createLogger("error", () => {}) });
  try {
    const { job } = await jobs.start("remote.test", "@admin:hs.test");
    await expect.poll(() => job.finished_at).toBeDefined();
    expect(job).toMatchObject({ total: 2, done: 2, failed: 2, ok: 0 });
    expect(escaped).toEqual([]);
  } finally {
    process.off("unhandledRejection", onEscape);
  }
});

test("a probe of a backed-off destination whose cluster lease cannot be taken: 503 for the caller, the probe's failed write not unhandled", async () => {
  const escaped: unknown[] = [];
  const onEscape = (e: unknown) => void escaped.push(e);
  process.on("unhandledRejection", onEscape);
  // The destination is in backoff with its probe due; recording the probe fails, and so does the
  // shared database's lease (cluster/pg-flight.ts), before the fetch would have awaited the write.
  const store = failing(await openDatabase(await freshDatabase("sqlite")), ["putBackoff"], {
    getBackoff: async (destination: string) => ({
      destination,
      failures: 1,
      retryAt: Date.now() + 60_000,
      lastProbeAt: 0,
    }),
  });
  const down = () => Promise.reject(new StoreUnavailable("cluster single-flight lease", new Error("down")));
  const cluster = {
    shared: true,
    flight: down,
    slot: down,
    peek: down,
    limiter: () => undefined,
  } as unknown as Cluster;
  const free = { take: () => 0 };
  const resyncer = new Resyncer({
    store,
    serverName: "hs.test",
    fetchDevices: async (userId) => ({ snapshot: { userId, streamId: 1, devices: {}, fetchedAt: Date.now() } }),
    refreshCacheMs: 0,
    retry: { initialMs: 1000, maxMs: 10_000 },
    maxAttempts: 3,
    probeIntervalMs: 1000,
    limits: { requester: free, target: free },
    cluster,
    log: createLogger("error", () => {}),
  });
  try {
    await expect(resyncer.refresh("@bob:remote.test", "@alice:hs.test", 5_000)).rejects.toBeInstanceOf(
      StoreUnavailable,
    );
    await new Promise((r) => setTimeout(r, 50));
    expect(escaped).toEqual([]);
  } finally {
    process.off("unhandledRejection", onEscape);
  }
});
