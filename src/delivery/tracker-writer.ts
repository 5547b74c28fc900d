// Trackers from /keys/query, written off the request path (docs/operations.md, "Tracking
// limits"). A query only queues its (device, target) pairs; a flush writes them in batches of
// BATCH_ROWS, one transaction each, one batch per turn of the event loop, so no request waits
// on the disk and no batch stalls the loop for long. Each device holds at most
// --max-trackers-per-device rows: a client naming made-up users by the hundred thousand fills
// its own allowance, not the disk.
import type { Logger } from "../observe/log.ts";
import type { Store } from "../store/store.ts";
import { StoreUnavailable } from "../store/store-guard.ts";

/** Rows per write transaction. */
const BATCH_ROWS = 500;
/** Rows queued at most: beyond it a burst of queries is dropped (and counted), not held. */
const MAX_QUEUED = 200_000;

interface Queued {
  userId: string;
  deviceId: string;
  at: number;
  /** When the oldest query still queued here was made. */
  since: number;
  targets: Set<string>;
}

export interface TrackerWriterOptions {
  store: Store;
  maxPerDevice: number;
  log: Logger;
  /** Told how many (device, target) pairs were not tracked: over a cap, or the store failed. */
  onDropped?: (n: number, why: "device_cap" | "queue_full" | "store") => void;
  /**
   * A write of this device's trackers of `targets` (queried since `since`) committed, adding
   * new rows (perhaps not all of them: existing rows were refreshed, some refused for the cap).
   */
  onWritten?: (userId: string, deviceId: string, targets: readonly string[], since: number) => void;
}

export class TrackerWriter {
  readonly #o: TrackerWriterOptions;
  readonly #queue = new Map<string, Queued>();
  #queued = 0;
  // Rows per device, read from the store once, then kept up to date by our own writes; an
  // expiry makes it stale, so it is read again after one (forget()).
  #counts: Map<string, number> | undefined;
  #scheduled = false;
  #idle: (() => void)[] = [];
  /** Targets of the batch being written now. */
  #writing = new Set<string>();

  constructor(o: TrackerWriterOptions) {
    this.#o = o;
  }

  /** Queue: these targets are tracked by this device from `now` (written soon, not now). */
  enqueue(userId: string, deviceId: string, targets: Iterable<string>, now: number): void {
    const key = `${userId}|${deviceId}`;
    let q = this.#queue.get(key);
    if (!q) this.#queue.set(key, (q = { userId, deviceId, at: now, since: now, targets: new Set() }));
    q.at = now;
    let dropped = 0;
    for (const t of targets) {
      if (q.targets.has(t)) continue;
      if (this.#queued >= MAX_QUEUED) {
        dropped++;
        continue;
      }
      q.targets.add(t);
      this.#queued++;
    }
    if (dropped) this.#o.onDropped?.(dropped, "queue_full");
    if (q.targets.size === 0) this.#queue.delete(key);
    this.#schedule();
  }

  /** The per-device counts are stale (trackers expired): read them again before the next write. */
  forget(): void {
    this.#counts = undefined;
  }

  /** Resolves once everything queued so far is written (tests, shutdown). */
  idle(): Promise<void> {
    if (this.#queued === 0) return Promise.resolve();
    return new Promise((r) => this.#idle.push(r));
  }

  get queued(): number {
    return this.#queued;
  }

  /** Is a tracker of this target queued or being written (not yet in the store)? */
  holds(target: string): boolean {
    if (this.#writing.has(target)) return true;
    for (const q of this.#queue.values()) if (q.targets.has(target)) return true;
    return false;
  }

  #schedule(): void {
    if (this.#scheduled || this.#queued === 0) return;
    this.#scheduled = true;
    setImmediate(() => {
      // One batch at a time: the next is scheduled once this one has been written.
      void this.#flushBatch()
        .catch((e) => this.#o.log.error("could not write trackers", { error: String(e) }))
        .then(() => {
          this.#scheduled = false;
          if (this.#queued > 0) this.#schedule();
          else this.#idle.splice(0).forEach((r) => r());
        });
    });
  }

  /** Write one batch: up to BATCH_ROWS rows, from as many devices as that takes. */
  async #flushBatch(): Promise<void> {
    let budget = BATCH_ROWS;
    try {
      this.#counts ??= new Map(
        (await this.#o.store.trackerCounts()).map((c) => [`${c.userId}|${c.deviceId}`, c.count]),
      );
      const counts = this.#counts;
      for (const [key, q] of this.#queue) {
        if (budget <= 0) break;
        const take: string[] = [];
        for (const t of q.targets) {
          if (take.length >= budget) break;
          take.push(t);
        }
        const have = counts.get(key) ?? 0;
        this.#writing = new Set(take);
        const { added, refused } = await this.#o.store
          .track(q.userId, q.deviceId, take, q.at, Math.max(0, this.#o.maxPerDevice - have))
          .finally(() => void (this.#writing = new Set()));
        counts.set(key, have + added);
        if (added > 0) this.#o.onWritten?.(q.userId, q.deviceId, take, q.since);
        for (const t of take) q.targets.delete(t);
        this.#queued -= take.length;
        budget -= take.length;
        if (q.targets.size === 0) this.#queue.delete(key);
        if (refused > 0) this.#capped(q, refused);
      }
    } catch (e) {
      if (!(e instanceof StoreUnavailable)) throw e;
      // A failing store (its guard logs it): the queue is dropped, not held for a disk that
      // may stay broken. Clients query keys again; trackers come back then.
      this.#o.onDropped?.(this.#queued, "store");
      this.#queue.clear();
      this.#queued = 0;
    }
  }

  #capped(q: Queued, refused: number): void {
    this.#o.onDropped?.(refused, "device_cap");
    this.#o.log.info("device reached --max-trackers-per-device: further users it queries are not tracked", {
      userId: q.userId,
      deviceId: q.deviceId,
      limit: this.#o.maxPerDevice,
      refused,
    });
  }
}
