// The audit (docs/architecture.md "Self-healing"): every tracked remote user is re-verified once
// per --audit-interval-ms, spread evenly over the interval, never faster than the global budget
// --audit-max-per-second, and each check goes through the resyncer's per-target limit, cache and
// destination backoff. It catches staleness that raises no signal at all.
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
}

/** Targets read from the store at a time: the walk never holds the whole list. */
const PAGE = 200;
/** With nobody tracked, how often to look again (a user tracked later is checked within an interval). */
const IDLE_LOOK_MS = 5_000;

export class Audit {
  readonly #o: AuditOptions;
  readonly #now: () => number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #page: string[] = [];
  #cursor = "";
  #passStartedAt = 0;
  #passDone = 0;
  #passTotal = 0;
  #running = false;

  constructor(o: AuditOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
  }

  get enabled(): boolean {
    return this.#o.intervalMs > 0;
  }

  /** How far the current pass runs behind its interval: 0 while on schedule. */
  behindSeconds(): number {
    if (!this.#running || this.#passTotal === 0) return 0;
    const elapsed = this.#now() - this.#passStartedAt;
    const due = Math.min(1, elapsed / this.#o.intervalMs) * this.#passTotal; // checks due by now
    const behindChecks = Math.max(0, due - this.#passDone);
    return behindChecks / Math.max(this.#o.maxPerSecond, this.#passTotal / (this.#o.intervalMs / 1000));
  }

  start(): void {
    if (!this.enabled || this.#running) return;
    this.#running = true;
    void this.#newPass()
      .catch((e) => this.#o.log.warn("audit step failed", { error: String((e as Error)?.message ?? e) }))
      .then(() => this.#schedule(this.#passTotal === 0 ? Math.min(this.#o.intervalMs, IDLE_LOOK_MS) : this.#gap()));
  }

  stop(): void {
    this.#running = false;
    clearTimeout(this.#timer);
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

  #schedule(ms: number): void {
    if (!this.#running) return;
    this.#timer = setTimeout(() => void this.#tick(), ms);
    this.#timer.unref?.();
  }

  // A pass checks its users one gap apart; the tick that finds the pass done starts the next
  // one and checks its first user at once, so each user comes round once per interval.
  async #tick(): Promise<void> {
    try {
      let next = await this.#next();
      if (next === undefined) {
        await this.#newPass();
        next = await this.#next();
        if (next === undefined) return this.#schedule(Math.min(this.#o.intervalMs, IDLE_LOOK_MS));
      }
      this.#passDone++;
      this.#o.metrics?.auditChecked.inc();
      const r = await this.#o.resyncer.background(next, { trigger: "audit", why: "periodic audit" });
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
