// The audit (docs/architecture.md "Self-healing"): every tracked remote user is re-verified once
// per --audit-interval-ms, spread evenly over the interval, never faster than the global budget
// --audit-max-per-second, and each check goes through the resyncer's per-target limit, cache and
// destination backoff. It catches staleness that raises no signal at all. Replicas on one
// PostgreSQL audit as one (docs/scaling.md "The audit"): the replica holding the cluster's
// "audit" lease walks, and saves its place in the pass with the lease at every check, so the
// replica that takes the lease over continues the pass where it stood.
import type { SharedLease } from "../cluster/cluster.ts";
import { LocalLease } from "../cluster/local.ts";
import type { Logger } from "../observe/log.ts";
import type { Metrics } from "../observe/metrics.ts";
import type { Store } from "../store/store.ts";
import { type Resyncer } from "./resyncer.ts";
import { serverOf } from "../matrix/user-id.ts";

export interface AuditOptions {
  store: Store;
  resyncer: Resyncer;
  serverName: string;
  intervalMs: number;
  maxPerSecond: number;
  log: Logger;
  metrics?: Metrics;
  now?: () => number;
  /** Who may walk (Cluster.lease("audit")); default: this process alone. */
  lease?: SharedLease;
}

/** Where a pass stands: what the holder saves with the lease at every check. */
interface Place {
  /** The last user checked: the walk goes on after it. */
  after: string;
  startedAt: number;
  done: number;
  total: number;
}

function parsePlace(state: string | null): Place | undefined {
  if (state === null) return undefined;
  try {
    const p = JSON.parse(state) as Partial<Place>;
    if (typeof p.after !== "string" || ![p.startedAt, p.done, p.total].every((n) => Number.isFinite(n)))
      return undefined;
    return p as Place;
  } catch {
    return undefined;
  }
}

/** Targets read from the store at a time: the walk never holds the whole list. */
const PAGE = 200;
/** With nobody tracked, how often to look again (a user tracked later is checked within an interval). */
const IDLE_LOOK_MS = 5_000;

export class Audit {
  readonly #o: AuditOptions;
  readonly #now: () => number;
  readonly #lease: SharedLease;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #claimTimer: ReturnType<typeof setTimeout> | undefined;
  #claiming: Promise<void> | undefined;
  #held = false;
  #page: string[] = [];
  #cursor = "";
  #passStartedAt = 0;
  #passDone = 0;
  #passTotal = 0;
  #running = false;

  constructor(o: AuditOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#lease = o.lease ?? new LocalLease();
  }

  get enabled(): boolean {
    return this.#o.intervalMs > 0;
  }

  /** How far the current pass runs behind its interval: 0 while on schedule. */
  behindSeconds(): number {
    // Only the holder walks; the others are behind nothing.
    if (!this.#running || !this.#held || this.#passTotal === 0) return 0;
    const elapsed = this.#now() - this.#passStartedAt;
    const due = Math.min(1, elapsed / this.#o.intervalMs) * this.#passTotal; // checks due by now
    const behindChecks = Math.max(0, due - this.#passDone);
    return behindChecks / Math.max(this.#o.maxPerSecond, this.#passTotal / (this.#o.intervalMs / 1000));
  }

  start(): void {
    if (!this.enabled || this.#running) return;
    this.#running = true;
    void this.#claim();
  }

  /** Stops walking and gives the lease up, so another replica takes the walk over at once. */
  async stop(): Promise<void> {
    this.#running = false;
    clearTimeout(this.#timer);
    clearTimeout(this.#claimTimer);
    await this.#claiming; // a claim landing after the release would take the lease again
    if (!this.#held) return;
    this.#held = false;
    await this.#lease.release().catch(() => {});
  }

  /** Takes or renews the lease; while another replica holds it, looks again a third of a lease on. */
  async #claim(): Promise<void> {
    const claiming = this.#claimOnce();
    this.#claiming = claiming;
    await claiming;
    this.#claiming = undefined;
    if (!this.#running || !Number.isFinite(this.#lease.claimEveryMs)) return;
    this.#claimTimer = setTimeout(() => void this.#claim(), this.#lease.claimEveryMs);
    this.#claimTimer.unref?.();
  }

  async #claimOnce(): Promise<void> {
    let got: { state: string | null } | false;
    let claimFailed = false;
    try {
      got = await this.#lease.claim();
    } catch (e) {
      // The database is away: whoever holds the lease when it is back walks on.
      this.#o.log.debug("audit lease claim failed", { error: String((e as Error)?.message ?? e) });
      got = false;
      claimFailed = true;
    }
    if (!this.#running) return;
    if (got === false) {
      if (this.#held) this.#lost(claimFailed ? "the database did not answer" : "another replica holds it");
      return;
    }
    if (this.#held) return; // renewed
    this.#held = true;
    await this.#resume(parsePlace(got.state))
      .catch((e) => this.#o.log.warn("audit step failed", { error: String((e as Error)?.message ?? e) }))
      .then(() => this.#schedule(this.#passTotal === 0 ? Math.min(this.#o.intervalMs, IDLE_LOOK_MS) : this.#gap()));
  }

  /** The pass where the last holder left it, or a new one. */
  async #resume(place: Place | undefined): Promise<void> {
    const shared = Number.isFinite(this.#lease.claimEveryMs);
    if (!place) {
      await this.#newPass();
      if (shared) this.#o.log.info("audit lease taken: a new pass", { total: this.#passTotal });
      return;
    }
    this.#cursor = place.after;
    this.#page = [];
    this.#passStartedAt = place.startedAt;
    this.#passDone = place.done;
    this.#passTotal = place.total;
    if (shared) this.#o.log.info("audit lease taken: the pass goes on", { done: place.done, total: place.total });
  }

  #lost(why: string): void {
    this.#held = false;
    clearTimeout(this.#timer);
    this.#o.log.info("audit lease lost", { why });
  }

  async #newPass(): Promise<void> {
    this.#cursor = "";
    this.#page = [];
    this.#passStartedAt = this.#now();
    this.#passDone = 0;
    this.#passTotal = 0;
    this.#passTotal = await this.#o.store.countTrackedTargets();
  }

  /** Even spacing over the interval, never under the budget's spacing. */
  #gap(): number {
    const even = this.#o.intervalMs / Math.max(1, this.#passTotal);
    return Math.max(1000 / this.#o.maxPerSecond, even);
  }

  // One timer at a time: a tick still running when the lease is taken again replaces, rather than
  // doubles, the walk.
  #schedule(ms: number): void {
    clearTimeout(this.#timer);
    if (!this.#running || !this.#held) return;
    this.#timer = setTimeout(() => void this.#tick(), ms);
    this.#timer.unref?.();
  }

  // A pass checks its users one gap apart; the tick that finds the pass done starts the next
  // one and checks its first user at once, so each user comes round once per interval.
  async #tick(): Promise<void> {
    if (!this.#held) return;
    try {
      let next = await this.#next();
      if (next === undefined) {
        await this.#newPass();
        next = await this.#next();
        if (next === undefined) return this.#schedule(Math.min(this.#o.intervalMs, IDLE_LOOK_MS));
      }
      this.#passDone++;
      // The place goes with the lease before the check: a replica taking over goes on after it.
      const place: Place = {
        after: next,
        startedAt: this.#passStartedAt,
        done: this.#passDone,
        total: this.#passTotal,
      };
      if (!(await this.#lease.save(JSON.stringify(place)))) return this.#lost("another replica holds it");
      this.#o.metrics?.auditChecked.inc();
      const r = await this.#o.resyncer.background(next, { trigger: "audit", why: "periodic audit", walk: true });
      this.#o.log.debug("audit check", { userId: next, check: r });
    } catch (e) {
      this.#o.log.warn("audit step failed", { error: String((e as Error)?.message ?? e) });
    }
    this.#schedule(this.#gap());
  }

  /** The next remote target of the walk, or undefined at the end of the pass. */
  async #next(): Promise<string | undefined> {
    for (;;) {
      if (this.#page.length === 0) {
        this.#page = await this.#o.store.trackedTargetsAfter(this.#cursor, PAGE);
        if (this.#page.length === 0) return undefined;
        this.#cursor = this.#page[this.#page.length - 1]!;
      }
      const t = this.#page.shift()!;
      if (serverOf(t) !== this.#o.serverName) return t;
    }
  }
}
