// What a list the remote answered with does: the destination answered, so its backoff and the
// target's retry entry end; an older list than the one held is kept out; otherwise it is
// delivered (through heal.ts when set, which delivers only a real change) and remembered for
// the cache window.
import type { DeviceSnapshot } from "../matrix/device.ts";
import { serverOf } from "../matrix/user-id.ts";
import type { Bookings } from "./bookings.ts";
import type { RecentOutcomes } from "./recent-outcomes.ts";
import type { ResyncContext, ResyncOptions } from "./resync-types.ts";

/** The list our answer carries: snapshot, or the newer one held. */
export async function takeFresh(
  o: ResyncOptions,
  bookings: Bookings,
  recent: RecentOutcomes,
  target: string,
  snapshot: DeviceSnapshot,
  ctx: ResyncContext,
): Promise<DeviceSnapshot> {
  await o.store.clearBackoff(serverOf(target));
  await o.store.deleteRetry(target);
  // The spec promises only that stream_id differs when the list changed (server-server API
  // §GET /user/devices/{userId}); Synapse, Dendrite and Conduit all hand out increasing ones.
  // A lower one is an older list (a lagging replica, a restored backup, a reordered answer)
  // and must not replace the newer one we hold. The destination did answer: no retry.
  const have = await o.store.getSnapshot(target);
  if (have && snapshot.streamId < have.streamId) {
    o.log.warn("the remote answered with an older device list than the one stored; keeping the stored one", {
      userId: target,
      streamId: snapshot.streamId,
      storedStreamId: have.streamId,
    });
    o.onStaleAnswer?.(target);
    return have;
  }
  let changed = true;
  await bookings.seal(target);
  if (o.onFresh) changed = await decide(o, snapshot, ctx);
  else {
    await o.store.putSnapshot(snapshot);
    await o.onSnapshot?.(snapshot);
  }
  recent.remember(target, { snapshot, changed });
  return snapshot;
}

/** The fresh list went to heal.ts; a fault there (the store) must not count as the remote's. */
async function decide(o: ResyncOptions, snapshot: DeviceSnapshot, ctx: ResyncContext): Promise<boolean> {
  try {
    return await o.onFresh!(snapshot, ctx);
  } catch (e) {
    o.log.warn("could not compare a fresh device list with the homeserver's view", {
      userId: snapshot.userId,
      error: String((e as Error)?.message ?? e),
    });
    return false;
  }
}
