// The refresh flow (MSC2638): rate limits, the short cache, single-flight fetches, destination
// backoff, and a durable retry queue. Routes call refresh(); the retry loop (retry-loop.ts) calls
// run().
import type { Landed } from "../cluster/cluster.ts";
import type { DeviceSnapshot } from "../matrix/device.ts";
import { serverOf } from "../matrix/user-id.ts";
import type { Backoff } from "../store/store.ts";
import { answerWithin } from "./answer.ts";
import { Bookings } from "./bookings.ts";
import { cachedOutcome, readStored, type Stored } from "./cached.ts";
import { takeFresh } from "./fresh-list.ts";
import { queueBehindBackoff, recordFailure } from "./record-failure.ts";
import { RecentOutcomes } from "./recent-outcomes.ts";
import { Limited, RefreshFailure } from "./refresh-errors.ts";
import {
  type BackgroundStart,
  type RefreshOutcome,
  type ResyncContext,
  type ResyncOptions,
  type Trigger,
  triggerOf,
} from "./resync-types.ts";
import { RetryLoop } from "./retry-loop.ts";
import { sharedFlight } from "./shared-flight.ts";

export class Resyncer {
  readonly #o: ResyncOptions;
  readonly #now: () => number;
  readonly #inflight = new Map<string, Promise<DeviceSnapshot>>();
  readonly #bookings = new Bookings();
  readonly #recent: RecentOutcomes;
  readonly #retries: RetryLoop;

  constructor(o: ResyncOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#recent = new RecentOutcomes(o.refreshCacheMs, this.#now);
    this.#retries = new RetryLoop({
      store: o.store,
      cluster: o.cluster,
      retryLease: o.retryLease,
      now: this.#now,
      running: (target) => this.#inflight.has(target),
      run: (r) =>
        void this.run(r.userId, r.requestedBy, { trigger: triggerOf(r.trigger), retry: true }).catch(() => {}),
    });
  }

  get inflight(): number {
    return this.#inflight.size;
  }

  /** Outcomes held for the cache window. */
  get recentOutcomes(): number {
    return this.#recent.size;
  }

  /** Devices in the outcomes held (each outcome counts one more). */
  get recentDevices(): number {
    return this.#recent.devices;
  }

  /**
   * A client's refresh: answers within waitMs, leaving the fetch (and retries) running.
   * `admit` prepares (it may wait, and must not write) once the requester's rate limit lets
   * the refresh through; the write it returns starts only once the target's limit has too, just
   * before the fetch starts or the snapshot answers (a refused (429) refresh writes nothing), and
   * is committed before the outcome is returned.
   */
  async refresh(
    target: string,
    requester: string,
    waitMs: number,
    admit?: () => Promise<() => void | Promise<void>>,
    ctx: ResyncContext = { trigger: "endpoint", retry: true },
  ): Promise<RefreshOutcome> {
    const o = this.#o;
    if (serverOf(target) === o.serverName) return { kind: "local" };
    const taken = o.limits.requester.take(requester);
    const wait = typeof taken === "number" ? taken : await taken; // a shared bucket (cluster/)
    if (wait > 0) return { kind: "limited", retryAfterMs: wait };
    const admitted = await admit?.();
    // What the store holds is read first; the decision below then runs with no await up to
    // run(): concurrent refreshes of one target must find its fetch.
    const stored =
      this.#inflight.has(target) || this.#recent.within(target) !== undefined ? undefined : await this.#stored(target);

    let running = this.#inflight.get(target);
    let booked: void | Promise<void>;
    let late = false;
    if (!running) {
      const cached = this.#cached(target, stored?.snapshot, stored?.elsewhere);
      if (cached) {
        await admitted?.();
        return { kind: "ok", snapshot: cached.snapshot, fromCache: true, changed: cached.changed };
      }
      // Another replica's fetch is running: joined with no target token, as a fetch running here
      // would be (one process's joiners take none).
      const joining = stored?.elsewhere === "running" ? stored.at : undefined;
      const waitTarget = joining !== undefined ? Promise.resolve(0) : o.limits.target.take(target);
      if (typeof waitTarget !== "number") {
        // The start books the requester's write itself, once the shared limit has answered.
        booked = undefined;
        const how = joining !== undefined ? { joining } : { backoff: stored?.backoff };
        running = this.#startShared(target, requester, ctx, waitTarget, admitted, how);
      } else {
        if (waitTarget > 0) return { kind: "limited", retryAfterMs: waitTarget };
        booked = admitted?.();
        this.#bookings.add(target, booked);
        const b = stored?.backoff;
        const now = this.#now();
        if (b && b.retryAt > now) {
          // A destination in backoff: an explicit refresh may probe it once per probe interval.
          if (now - b.lastProbeAt < o.probeIntervalMs) {
            await booked;
            return this.#backedOff(target, requester, b, ctx.trigger);
          }
          running = this.run(target, [requester], ctx, o.store.putBackoff({ ...b, lastProbeAt: now }));
        } else running = this.run(target, [requester], ctx);
      }
    } else {
      booked = admitted?.();
      late = !this.#bookings.add(target, booked);
    }
    // The wait for the fetch starts now; the answer goes once the booking is written too.
    const answer = answerWithin(this.#recent, target, running, waitMs, late);
    // Handled from the start: the fetch may fail (a StoreUnavailable mid-fetch) while the booking
    // is still being written, and a rejection with no handler by then escapes the process as
    // unhandled. It still reaches the caller through the return below.
    answer.catch(() => {});
    await booked; // its failure is the answer
    return answer;
  }

  /**
   * refresh() past the local cache with a shared target limit (cluster/): the limit's answer is
   * a database round trip, so the start is itself the in-flight entry that concurrent refreshes
   * of the target join; a refusal refuses them all. `how.joining`: another replica's fetch was
   * seen running at that time (Cluster.peek); it is joined, never probing a backed-off
   * destination.
   */
  #startShared(
    target: string,
    requester: string,
    ctx: ResyncContext,
    taken: Promise<number>,
    admitted: (() => void | Promise<void>) | undefined,
    how: { backoff: Backoff | undefined } | { joining: number },
  ): Promise<DeviceSnapshot> {
    const o = this.#o;
    const p = (async () => {
      const wait = await taken;
      if (wait > 0) throw new Limited(wait);
      const booked = admitted?.();
      this.#bookings.add(target, booked);
      await booked;
      const now = this.#now();
      // A join takes the outcome that landed since the fetch was seen running, however short the
      // cache window (0 included): a fetch of its own here would have spent no token.
      if ("joining" in how)
        return this.#flight(target, [requester], ctx, undefined, Math.max(o.refreshCacheMs, now - how.joining + 1_000));
      const b = how.backoff;
      let after: Promise<unknown> | undefined;
      if (b && b.retryAt > now) {
        // A destination in backoff: an explicit refresh may probe it once per probe interval.
        if (now - b.lastProbeAt < o.probeIntervalMs) {
          const out = await this.#backedOff(target, requester, b, ctx.trigger);
          if (out.kind === "failed") throw new RefreshFailure(out.error, out.nextRetryInMs);
        }
        after = o.store.putBackoff({ ...b, lastProbeAt: now });
      }
      return this.#flight(target, [requester], ctx, after, o.refreshCacheMs);
    })().finally(() => {
      this.#inflight.delete(target);
      this.#bookings.end(target);
      this.#retries.schedule();
    });
    p.catch(() => {});
    this.#inflight.set(target, p);
    return p;
  }

  #stored(target: string): Promise<Stored> {
    return readStored(this.#o, this.#now, target);
  }

  #cached(target: string, snap: DeviceSnapshot | undefined, elsewhere?: Landed | "running") {
    return cachedOutcome(this.#o, this.#recent, this.#now, target, snap, elsewhere);
  }

  /**
   * A background check (a suspicion, the audit): through the same single-flight, cache, per-target
   * rate limit and destination backoff as an explicit refresh, never probing a backed-off
   * destination and never queueing retries, so no flood of questions can cost more fetches than
   * the per-target limit allows, nor grow the store.
   */
  async background(target: string, ctx: ResyncContext): Promise<BackgroundStart> {
    const o = this.#o;
    if (serverOf(target) === o.serverName) return "local";
    if (this.#inflight.has(target)) return "joined";
    if (this.#recent.within(target) !== undefined) return "cached";
    const stored = await this.#stored(target);
    // From here to run() no await: the check above may have been overtaken meanwhile.
    if (this.#inflight.has(target) || stored.elsewhere === "running") return "joined";
    if (this.#cached(target, stored.snapshot, stored.elsewhere)) return "cached";
    const b = stored.backoff;
    if (b && b.retryAt > this.#now()) return "backoff";
    const taken = o.limits.target.take(target);
    if (typeof taken !== "number") {
      // A shared bucket answers later: started, unless it then refuses (a background check's
      // outcome is never waited on).
      void taken
        .then((w) => (w > 0 ? undefined : this.run(target, [], { ...ctx, retry: false }, undefined, o.refreshCacheMs)))
        .catch(() => {});
      return "started";
    }
    if (taken > 0) return "limited";
    void this.run(target, [], { ...ctx, retry: false }).catch(() => {});
    return "started";
  }

  /**
   * An operator's refresh (admin API): start or join the fetch with no rate limit or backoff
   * in the way, and answer within waitMs as refresh() does.
   */
  runWithin(target: string, requestedBy: string[], waitMs: number, ctx: ResyncContext): Promise<RefreshOutcome> {
    return answerWithin(this.#recent, target, this.run(target, requestedBy, ctx), waitMs);
  }

  /**
   * Start (or join) the single fetch for target. Failures are recorded and rescheduled (record-failure.ts).
   * `after`: a write (the probe's) that is committed before the fetch starts. `freshMs`: with
   * replicas, an outcome another one landed that recently is taken as is.
   */
  run(
    target: string,
    requestedBy: string[],
    ctx: ResyncContext,
    after?: Promise<unknown>,
    freshMs = 0,
  ): Promise<DeviceSnapshot> {
    const existing = this.#inflight.get(target);
    if (existing) return existing;
    const p = this.#flight(target, requestedBy, ctx, after, freshMs).finally(() => {
      this.#inflight.delete(target);
      this.#bookings.end(target);
      this.#retries.schedule();
    });
    p.catch(() => {}); // the outcome is recorded in the store; callers that wait observe it
    this.#inflight.set(target, p);
    return p;
  }

  /**
   * The fetch, through the cluster's lease when replicas share a database: the holder fetches,
   * stores and delivers; a replica that waited answers with the outcome that landed.
   */
  #flight(
    target: string,
    requestedBy: string[],
    ctx: ResyncContext,
    after: Promise<unknown> | undefined,
    freshMs: number,
  ): Promise<DeviceSnapshot> {
    // The fetch awaits `after` only once it runs: a lease that cannot be taken (a failing shared
    // database) never gets there, and the write's own failure must not then escape unhandled.
    after?.catch(() => {});
    const cluster = this.#o.cluster;
    if (!cluster?.shared) return this.#fetch(target, requestedBy, ctx, after);
    const fetch = () => this.#fetch(target, requestedBy, ctx, after);
    return sharedFlight(cluster, target, fetch, this.#recent, freshMs);
  }

  /** This replica's fetch: the list taken (fresh-list.ts), or the failure recorded. */
  async #fetch(
    target: string,
    requestedBy: string[],
    ctx: ResyncContext,
    after?: Promise<unknown>,
  ): Promise<DeviceSnapshot> {
    const o = this.#o;
    try {
      await after;
      const { snapshot } = await o.fetchDevices(target);
      return await takeFresh(o, this.#bookings, this.#recent, target, snapshot, ctx);
    } catch (err) {
      return await recordFailure(o, this.#retries, this.#now, target, requestedBy, ctx, err);
    }
  }

  #backedOff(target: string, requester: string, b: Backoff, trigger: Trigger): Promise<RefreshOutcome> {
    return queueBehindBackoff(this.#o, this.#retries, this.#now, target, requester, b, trigger);
  }

  /** Starts the retry loop (retry-loop.ts). */
  start(): void {
    this.#retries.start();
  }

  stop(): void {
    this.#retries.stop();
  }
}
