// What answers a question about a target without a fetch, within the cache window
// (--refresh-cache-ms): the outcome held here, what another replica's fetch landed (an
// unchanged list is not stored, so without it this replica would fetch again, where one process
// answers from its cache), or a stored snapshot fetched within the window.
import type { Landed } from "../cluster/cluster.ts";
import type { DeviceSnapshot } from "../matrix/device.ts";
import { serverOf } from "../matrix/user-id.ts";
import type { Backoff } from "../store/store.ts";
import { decodeLanded } from "./landed.ts";
import type { RecentOutcomes } from "./recent-outcomes.ts";
import type { ResyncOptions } from "./resync-types.ts";
import { flightKey } from "./shared-flight.ts";

export interface Stored {
  snapshot: DeviceSnapshot | undefined;
  backoff: Backoff | undefined;
  elsewhere: Landed | "running" | undefined;
  at: number;
}

/**
 * The stored snapshot and the destination's backoff, read together; with replicas, what the
 * last fetch of target on any of them left (Cluster.peek), read at `at`.
 */
export async function readStored(o: ResyncOptions, now: () => number, target: string): Promise<Stored> {
  const at = now();
  const [snapshot, backoff, elsewhere] = await Promise.all([
    o.store.getSnapshot(target),
    o.store.getBackoff(serverOf(target)),
    // A failing read only costs what it would have saved: the refresh then takes a target
    // token, and the lease's own statements report the database.
    o.cluster?.shared ? o.cluster.peek(flightKey(target), o.refreshCacheMs).catch(() => undefined) : undefined,
  ]);
  return { snapshot, backoff, elsewhere, at };
}

/**
 * The last outcome for target, if within the cache window (`snap`: the stored snapshot,
 * `elsewhere`: what another replica's fetch left, both read before).
 */
export function cachedOutcome(
  o: ResyncOptions,
  recent: RecentOutcomes,
  now: () => number,
  target: string,
  snap: DeviceSnapshot | undefined,
  elsewhere?: Landed | "running",
): { snapshot: DeviceSnapshot; changed: boolean } | undefined {
  const r = recent.within(target);
  if (r) return r;
  if (elsewhere !== undefined && elsewhere !== "running") {
    const d = decodeLanded(elsewhere);
    if (d.ok) {
      const landed = { snapshot: d.snapshot, changed: d.changed, elsewhere: true };
      recent.remember(target, landed);
      return landed;
    }
  }
  if (snap && now() - snap.fetchedAt < o.refreshCacheMs) return { snapshot: snap, changed: true };
  return undefined;
}
