// Trackers written after a fan-out read them (docs/scaling.md, "Shared and per replica"). A
// device's tracker is written off the request path (tracker-writer.ts). In one process a fan-out
// waits for the queue first (Delivery.onSnapshot), but a fan-out on another replica may read the
// trackers before this replica's write commits, and so miss the device. So each replica
// remembers for a while the fan-outs it heard of (its own and the others': when each read the
// trackers) and the trackers it added (from the query to the write's acknowledgement). A read
// that falls in that span may have missed the device: the device is told here. A read after the
// acknowledgement saw the row; a read before the query was of a list the query already got.
import { LRUCache } from "lru-cache";

/** How long both are remembered: far beyond a write's or a bus message's delay. */
const REMEMBER_MS = 30_000;
/**
 * Replicas' clocks may differ this much (NTP): another replica's fan-out counts as that much
 * earlier and later. Erring wide tells a device twice at worst, and the second row is a no-op
 * while the first is pending (Store.addPending `keep`).
 */
export const CLOCK_SLACK_MS = 500;
/** Entries remembered at most, each way, and per target: a bound under any load. */
const MAX_ENTRIES = 50_000;
const PER_TARGET = 1_000;

export interface Device {
  userId: string;
  deviceId: string;
}
interface Fanout {
  at: number;
  slack: number;
  until: number;
}
interface Written extends Device {
  since: number;
  ackAt: number;
  until: number;
}

const missed = (w: Written, f: Fanout) => w.since - f.slack <= f.at && f.at <= w.ackAt + f.slack;

export class LateTrackers {
  readonly #fanouts = remembered<Fanout>();
  readonly #written = remembered<Written>();
  readonly #now: () => number;

  constructor(now: () => number) {
    this.#now = now;
  }

  /**
   * A fan-out of `target` read its trackers at `at` (`slack`: 0 for this replica's own clock):
   * the devices whose trackers this replica added around then, which it may have missed.
   */
  fannedOut(target: string, at: number, slack: number): Device[] {
    const now = this.#now();
    add(this.#fanouts, target, { at, slack, until: now + REMEMBER_MS }, now);
    const f = { at, slack, until: 0 };
    return live(this.#written.get(target), now)
      .filter((w) => missed(w, f))
      .map((w) => ({ userId: w.userId, deviceId: w.deviceId }));
  }

  /**
   * This device's new trackers of `targets`, queried since `since`, acknowledged as written at
   * `ackAt`: the targets whose fan-out may have missed it.
   */
  written(device: Device, targets: Iterable<string>, since: number, ackAt: number): string[] {
    const now = this.#now();
    const out: string[] = [];
    for (const t of targets) {
      const w: Written = { ...device, since, ackAt, until: now + REMEMBER_MS };
      if (live(this.#fanouts.get(t), now).some((f) => missed(w, f))) out.push(t);
      // Kept even when told: a later message may bring another fan-out that read before ackAt.
      add(this.#written, t, w, now);
    }
    return out;
  }
}

function remembered<T extends object>(): LRUCache<string, T[]> {
  return new LRUCache<string, T[]>({
    maxSize: MAX_ENTRIES,
    sizeCalculation: (list) => Math.max(1, list.length),
    ttl: REMEMBER_MS,
  });
}

function live<T extends { until: number }>(list: T[] | undefined, now: number): T[] {
  return list ? list.filter((x) => x.until >= now) : [];
}

function add<T extends { until: number }>(cache: LRUCache<string, T[]>, key: string, x: T, now: number): void {
  const list = live(cache.get(key), now);
  list.push(x);
  cache.set(key, list.length > PER_TARGET ? list.slice(-PER_TARGET) : list);
}
