// The fetch through the cluster's lease when replicas share a database (cluster/pg-flight.ts):
// the holder fetches, stores and delivers; a replica that waited answers with the outcome that
// landed, as if its own fetch had.
import type { Cluster } from "../cluster/cluster.ts";
import type { DeviceSnapshot } from "../matrix/device.ts";
import { decodeLanded, landedFailure, landedOk } from "./landed.ts";
import type { RecentOutcomes } from "./recent-outcomes.ts";
import { RefreshFailure } from "./refresh-errors.ts";

/** The key of a target's fetch among the replicas (Cluster.flight, Cluster.peek). */
export const flightKey = (target: string) => `devices:${target}`;

/** `fetch`: this replica's fetch, run if it holds the lease; `freshMs` as for Cluster.flight. */
export async function sharedFlight(
  cluster: Cluster,
  target: string,
  fetch: () => Promise<DeviceSnapshot>,
  recent: RecentOutcomes,
  freshMs: number,
): Promise<DeviceSnapshot> {
  let own: { snapshot: DeviceSnapshot } | { error: unknown } | undefined;
  const landed = await cluster.flight(
    flightKey(target),
    async () => {
      try {
        const snapshot = await fetch();
        own = { snapshot };
        return landedOk(snapshot, recent.get(target)?.changed ?? true);
      } catch (e) {
        own = { error: e };
        return e instanceof RefreshFailure ? landedFailure(e, e.error, e.nextRetryInMs) : landedFailure(e);
      }
    },
    freshMs,
  );
  if (own && "snapshot" in own) return own.snapshot;
  if (own) throw own.error;
  const d = decodeLanded(landed);
  if (d.ok) {
    recent.remember(target, { snapshot: d.snapshot, changed: d.changed, elsewhere: true });
    return d.snapshot;
  }
  if ("unavailable" in d) throw d.unavailable;
  throw new RefreshFailure(d.error, d.nextRetryInMs);
}
