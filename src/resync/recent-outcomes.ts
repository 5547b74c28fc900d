// The last outcome per user, for the cache window (--refresh-cache-ms): an unchanged list is not
// stored as a snapshot (it must not be served as an overlay), yet a second question within the
// window must cost nothing either. Outcomes past the window answer nothing and are dropped
// (remember): the audit walks every tracked user, and each whole snapshot held until 50,000
// users had come round was most of the proxy's growth over a pass (docs/performance.md, ninth
// session). Bounded by devices too: a burst of 1000-device lists within one window would
// otherwise hold 50,000 of them; past the bound the least recently used answer from the store or
// fetch again.
import { LRUCache } from "lru-cache";
import { MAX_DEVICES } from "../federation/device-validate.ts";
import type { DeviceSnapshot } from "../matrix/device.ts";

/**
 * A fetch's outcome. `elsewhere`: the outcome of a fetch another replica made (its lease,
 * cluster/pg-flight.ts).
 */
export interface Outcome {
  snapshot: DeviceSnapshot;
  changed: boolean;
  elsewhere?: boolean;
}

/**
 * Outcomes are held at least this long, however short the cache window (0 included): a fetch's
 * own callers read whether it changed anything once it has landed (Resyncer's #ok, sharedFlight).
 */
const RECENT_MIN_MS = 5_000;
/** Devices held in outcomes at most (MAX_DEVICES lists: at least 20 of them). */
const RECENT_MAX_DEVICES = 20 * (MAX_DEVICES + 1);
/** Outcomes past their window are looked for at most this often (a walk over all of them). */
const SWEEP_MS = 1_000;

export class RecentOutcomes {
  readonly #windowMs: number;
  readonly #now: () => number;
  readonly #recent = new LRUCache<string, Outcome>({
    max: 50_000,
    maxSize: RECENT_MAX_DEVICES,
    sizeCalculation: (o) => Object.keys(o.snapshot.devices).length + 1,
  });
  #sweptAt = -Infinity;

  constructor(windowMs: number, now: () => number) {
    this.#windowMs = windowMs;
    this.#now = now;
  }

  /** Outcomes held. */
  get size(): number {
    return this.#recent.size;
  }

  /** Devices in the outcomes held (each outcome counts one more). */
  get devices(): number {
    return this.#recent.calculatedSize;
  }

  /** The outcome held for target, whether or not its window is over. */
  get(target: string): Outcome | undefined {
    return this.#recent.get(target);
  }

  /** The outcome held for target if it is within the cache window. */
  within(target: string): Outcome | undefined {
    const r = this.#recent.get(target);
    return r !== undefined && this.#now() - r.snapshot.fetchedAt < this.#windowMs ? r : undefined;
  }

  /**
   * Holds an outcome for the cache window, and drops those whose window is over: looked for at
   * most once a SWEEP_MS, over all of them (one read within the window is not the least recently
   * used, so the oldest are not all at the end).
   */
  remember(target: string, outcome: Outcome): void {
    this.#recent.set(target, outcome);
    const now = this.#now();
    if (now - this.#sweptAt < SWEEP_MS) return;
    this.#sweptAt = now;
    const keep = Math.max(this.#windowMs, RECENT_MIN_MS);
    const over: string[] = [];
    this.#recent.forEach((o, k) => {
      if (now - o.snapshot.fetchedAt >= keep && k !== target) over.push(k);
    });
    for (const k of over) this.#recent.delete(k);
  }
}
