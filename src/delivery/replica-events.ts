// What this replica does when another one changed something (cluster/cluster.ts, "ClusterEvent"):
// wake its own long-polls of devices that have new pending rows, and drop the caches that the
// change made stale. The store (shared) holds the truth in every case.
import type { Cluster, ClusterEvent } from "../cluster/cluster.ts";
import type { Logger } from "../observe/log.ts";
import { storeFallback } from "../store/store-guard.ts";
import type { Delivery } from "./delivery.ts";
import type { Overlays } from "./overlays.ts";
import type { Views } from "./views.ts";

export interface ReplicaReaders {
  delivery: Delivery;
  overlays: Overlays;
  views: Views;
  log: Logger;
  /** Each long-poll woken by another replica's news (the cross-replica wake metric). */
  onWake?: (n: number) => void;
}

export function followReplicas(cluster: Cluster, r: ReplicaReaders): () => void {
  if (!cluster.shared) return () => {};
  return cluster.subscribe((e: ClusterEvent) => {
    switch (e.kind) {
      case "pending": {
        const n = r.delivery.waiters.wake(e.devices); // not inside `?.()`: it must run either way
        r.onWake?.(n);
        return;
      }
      case "snapshots":
        r.overlays.changedElsewhere(e.users);
        return;
      case "views":
        r.views.changedElsewhere(e.users);
        return;
      case "resubscribed": {
        // Anything sent while the bus was down was missed: every held poll answers at once with
        // what is pending for it (perhaps nothing; the client polls again), and the caches start
        // again from the store.
        r.log.info("re-checking every held long-poll and cache after the cluster bus came back");
        void storeFallback(() => r.overlays.reload(), undefined);
        void storeFallback(() => r.views.resync(), undefined);
        const n = r.delivery.waiters.wakeAll();
        r.onWake?.(n);
        return;
      }
    }
  });
}
