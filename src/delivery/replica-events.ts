// What this replica does when another one changed something (cluster/cluster.ts, "ClusterEvent"):
// wake its own long-polls of devices that have new pending rows, and drop the caches that the
// change made stale. The store (shared) holds the truth in every case.
import type { Cluster, ClusterEvent } from "../cluster/cluster.ts";
import type { Logger } from "../observe/log.ts";
import { storeFallback } from "../store/store-guard.ts";
import type { Delivery } from "./delivery.ts";
import type { Overlays } from "./overlays.ts";
import type { Store } from "../store/store.ts";
import type { Views } from "./views.ts";

export interface ReplicaReaders {
  delivery: Delivery;
  overlays: Overlays;
  views: Views;
  store: Store;
  log: Logger;
}

export function followReplicas(cluster: Cluster, r: ReplicaReaders): () => void {
  if (!cluster.shared) return () => {};
  return cluster.subscribe((e: ClusterEvent) => {
    switch (e.kind) {
      case "pending":
        void wakePending(r, e.devices);
        return;
      case "snapshots":
        r.overlays.changedElsewhere(e.users);
        return;
      case "views":
        r.views.changedElsewhere(e.users);
        return;
      case "fanout":
        r.delivery.fannedOutElsewhere(e.user, e.at);
        return;
      case "resubscribed": {
        // Anything sent while the bus was down was missed: every held poll answers at once with
        // what is pending for it (perhaps nothing; the client polls again), and the caches start
        // again from the store.
        r.log.info("re-checking every held long-poll and cache after the cluster bus came back");
        void storeFallback(() => r.overlays.reload(), undefined);
        void storeFallback(() => r.views.resync(), undefined);
        r.delivery.waiters.wakeAll();
        return;
      }
    }
  });
}

/**
 * Wake this replica's long-polls of these devices that still have something pending. A
 * notification can arrive late, after the client already took the rows from another replica and
 * acknowledged them: waking then would answer its next poll at once with nothing in it. Only the
 * devices with a poll held here cost a read; a failing store wakes (the poll then goes plain).
 */
async function wakePending(r: ReplicaReaders, devices: readonly string[]): Promise<void> {
  const held = devices.filter((k) => r.delivery.waiters.has(k));
  if (held.length === 0) return;
  const due = await Promise.all(
    held.map(async (k) => {
      // deviceKey(): a user id never contains "|" (its grammar), a device id may.
      const bar = k.indexOf("|");
      const pending = await storeFallback(() => r.store.hasPending(k.slice(0, bar), k.slice(bar + 1)), true);
      return pending ? k : undefined;
    }),
  );
  r.delivery.waiters.wake(due.filter((k): k is string => k !== undefined));
}
