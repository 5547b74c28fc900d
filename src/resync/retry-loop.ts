// The retry loop: one timer, set for the earliest due retry (at most 30 s away, so an entry
// written by another process is seen too). Due entries start concurrently: one slow
// destination never holds up another (the transport caps each destination at 3). Replicas
// tell each other of every retry they schedule: each then knows when the entry is due, and
// when a claim on it ends, so one whose claimer died is taken over as its lease ends.
import { serverOf } from "../matrix/user-id.ts";
import type { RetryEntry } from "../store/store.ts";
import type { ResyncOptions } from "./resync-types.ts";

export type RetryLoopOptions = Pick<ResyncOptions, "store" | "cluster" | "retryLease"> & {
  now: () => number;
  /** Whether target's fetch is running here (its retry waits for the next look). */
  running: (target: string) => boolean;
  /** Starts a due retry's fetch; its outcome is recorded by the fetch. */
  run: (r: RetryEntry) => void;
};

export class RetryLoop {
  readonly #o: RetryLoopOptions;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #scheduled = 0;
  #stopped = true;
  #unfollow: (() => void) | undefined;

  constructor(o: RetryLoopOptions) {
    this.#o = o;
  }

  start(): void {
    this.#stopped = false;
    const cluster = this.#o.cluster;
    this.#unfollow ??= cluster?.shared
      ? cluster.subscribe((e) => {
          if (e.kind === "retries" || e.kind === "resubscribed") this.schedule();
        })
      : undefined;
    this.schedule();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#unfollow?.();
    this.#unfollow = undefined;
  }

  /** A retry entry was written here: the other replicas look again. */
  moved(): void {
    if (this.#o.cluster?.shared) this.#o.cluster.publish({ kind: "retries" });
  }

  /** Sets the timer for the earliest due retry, as the store now has it. */
  schedule(): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    // Only the latest call sets the timer: an earlier read may answer after a later one.
    const seq = ++this.#scheduled;
    this.#o.store.nextRetryAt().then(
      (next) => this.#arm(seq, next),
      () => this.#arm(seq, this.#o.now() + 5_000), // a failing store (logged by its guard): look again soon
    );
  }

  #arm(seq: number, next: number | undefined): void {
    if (this.#stopped || seq !== this.#scheduled) return;
    clearTimeout(this.#timer);
    // At least 50 ms: a due entry whose fetch is still in flight must not spin the loop.
    const delay = next === undefined ? 30_000 : Math.min(30_000, Math.max(50, next - this.#o.now()));
    this.#timer = setTimeout(() => void this.#tick(), delay);
    this.#timer.unref?.();
  }

  async #tick(): Promise<void> {
    const o = this.#o;
    const now = o.now();
    try {
      const lease = o.retryLease ?? { holder: "local", ms: 60_000 };
      for (const r of await o.store.claimDueRetries(now, 200, lease.holder, lease.ms)) {
        if (o.running(r.userId)) continue;
        const b = await o.store.getBackoff(serverOf(r.userId));
        if (b && b.retryAt > now) {
          await o.store.putRetry({ ...r, dueAt: b.retryAt });
          continue;
        }
        o.run(r);
      }
    } catch {
      // A failing store (its guard logs it): the loop carries on, and the entries stay due.
    }
    this.schedule();
  }
}
