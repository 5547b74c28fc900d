// Bun's collector runs when the program allocates. A burst (a restart brings thousands of
// long-polls back, each with a token lookup) leaves its garbage in the heap, and a proxy that
// then sits holding those polls allocates too little to ever collect it: RSS stays at the
// burst's peak. V8 has a "memory reducer" for this; JavaScriptCore as Bun runs it has none.
// This is one: when RSS has grown well past where our last collection left it, has stopped
// moving, and the process is quiet, collect once (docs/performance.md, idle long-polls); and
// once a minute while it stays quiet (the audit's slow walk: quietEveryMs). Quiet,
// because a full collection pauses everything for tens of milliseconds: under load that pause
// lands on requests, and the allocating load lets the collector run by itself anyway.
import type { Logger } from "../observe/log.ts";

export interface MemoryReducerOptions {
  /** Resident set size now, bytes. */
  rss(): number;
  /** A full, synchronous collection. */
  collect(): void;
  /** CPU time the process has used so far, seconds. */
  cpuSeconds(): number;
  /** How often RSS is read, ms (default 2 s). */
  periodMs?: number;
  /** Growth past the level after our last collection that is worth one, bytes (default 16 MB). */
  growthBytes?: number;
  /** RSS moved less than this over one period: the burst is over (default 2 MB). */
  settledBytes?: number;
  /** Quiet: the process used less than this share of one core over the period (default 5 %). */
  quietShare?: number;
  /**
   * At least this long between two collections, ms (default 60 s). Under steady load whose
   * garbage the collector is merely slow to take, RSS can sit high and still: a full pause
   * there buys little, so it is not repeated every few seconds.
   */
  minIntervalMs?: number;
  /**
   * A process quiet for this long since its last collection is collected anyway, ms (default
   * 60 s). Quiet is not idle: the audit at 2/s allocates a little all the time, the collector
   * then runs seldom, and RSS creeps up by pages a late collection does not give back (+14.9 MB
   * over 15 minutes, 1.2 MB of it back after one full collection); with one a minute it grew
   * 2.3 MB over the 15 minutes after the first 5 (docs/performance.md, ninth session).
   */
  quietEveryMs?: number;
  now?(): number;
}

export class MemoryReducer {
  readonly #o: Required<MemoryReducerOptions>;
  #floor: number;
  #last: number;
  #lastCollection = -Infinity;
  #lastTick: number;
  #lastCpu: number;
  /** Since when every reading was quiet. */
  #quietSince: number;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(o: MemoryReducerOptions) {
    this.#o = {
      periodMs: 2_000,
      growthBytes: 16e6,
      settledBytes: 2e6,
      quietShare: 0.05,
      minIntervalMs: 60_000,
      quietEveryMs: 60_000,
      now: () => performance.now(),
      ...o,
    };
    this.#floor = this.#last = o.rss();
    this.#lastTick = this.#quietSince = this.#o.now();
    this.#lastCpu = o.cpuSeconds();
  }

  start(): this {
    this.#timer ??= setInterval(() => this.tick(), this.#o.periodMs);
    // Never what keeps the process alive.
    this.#timer.unref?.();
    return this;
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * One reading: collect when grown, settled and quiet, or when quiet for quietEveryMs since the
   * last collection. Returns whether it collected.
   */
  tick(): boolean {
    const rss = this.#o.rss(),
      t = this.#o.now(),
      cpu = this.#o.cpuSeconds();
    const settled = Math.abs(rss - this.#last) < this.#o.settledBytes;
    const quiet = cpu - this.#lastCpu < (this.#o.quietShare * (t - this.#lastTick)) / 1000;
    this.#last = rss;
    this.#lastTick = t;
    this.#lastCpu = cpu;
    if (!quiet) this.#quietSince = t;
    // RSS that fell on its own (the collector ran, memory went back) is the new floor.
    if (rss < this.#floor) this.#floor = rss;
    const every = this.#o.quietEveryMs;
    const quietLong = quiet && t - this.#quietSince >= every && t - this.#lastCollection >= every;
    const grown =
      settled && quiet && rss - this.#floor >= this.#o.growthBytes && t - this.#lastCollection >= this.#o.minIntervalMs;
    if (!quietLong && !grown) return false;
    this.#lastCollection = t;
    this.#o.collect();
    this.#floor = this.#last = this.#o.rss();
    // The pause itself is not the next period's load.
    this.#lastCpu = this.#o.cpuSeconds();
    return true;
  }
}

/** The reducer for this runtime: Bun only (V8, under Deno and Node, has its own). */
export function startMemoryReducer(log?: Logger): MemoryReducer | undefined {
  const bun = (globalThis as { Bun?: { gc(force: boolean): void } }).Bun;
  if (!bun) return undefined;
  const rss = () => process.memoryUsage.rss();
  const cpuSeconds = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  };
  const collect = () => {
    const before = rss(),
      started = performance.now();
    bun.gc(true);
    log?.debug("memory reducer: collected after RSS settled", {
      rssBefore: before,
      rssAfter: rss(),
      pauseMs: Math.round(performance.now() - started),
    });
  };
  return new MemoryReducer({ rss, collect, cpuSeconds }).start();
}
