// How a refresh is answered from the fetch it started or joined: with the list if the fetch
// ends within waitMs, else `pending`, the fetch left running with its outcome still to land
// (it decides who must be told). Whether the list changed is what the fetch remembered.
import type { DeviceSnapshot } from "../matrix/device.ts";
import type { RecentOutcomes } from "./recent-outcomes.ts";
import { notOk } from "./refresh-errors.ts";
import type { RefreshOutcome } from "./resync-types.ts";

/** `late`: joined after the fetch's fan-out began (RefreshOutcome `ok`). */
export async function answerWithin(
  recent: RecentOutcomes,
  target: string,
  p: Promise<DeviceSnapshot>,
  waitMs: number,
  late = false,
): Promise<RefreshOutcome> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<"pending">((r) => (timer = setTimeout(() => r("pending"), waitMs)));
  try {
    const r = await Promise.race([p, deadline]);
    if (r === "pending") {
      // Answered before the fetch ended: its outcome still decides who must be told.
      const landed = p.then(
        (s) => ok(recent, target, s, late),
        (e) => notOk(e, { kind: "pending" }),
      );
      return { kind: "pending", landed };
    }
    return ok(recent, target, r, late);
  } catch (e) {
    return notOk(e);
  } finally {
    clearTimeout(timer);
  }
}

function ok(recent: RecentOutcomes, target: string, snapshot: DeviceSnapshot, late: boolean): RefreshOutcome {
  const held = recent.get(target);
  // Another replica's fetch is, to this one, a cache hit: the asker's devices are told here.
  return {
    kind: "ok",
    snapshot,
    fromCache: held?.elsewhere === true,
    changed: held?.changed ?? true,
    ...(late ? { late } : {}),
  };
}
