// The refresh flow (MSC2638): rate limits, the short cache, single-flight fetches, destination
// backoff, and a durable retry queue. Routes call refresh(); the retry loop calls run().
import { LRUCache } from "lru-cache";
import { MAX_DEVICES } from "../federation/device-validate.ts";
import { FederationError } from "../federation/errors.ts";
import type { Logger } from "../observe/log.ts";
import type { DeviceSnapshot } from "../matrix/device.ts";
import { StoreUnavailable } from "../store/store-guard.ts";
import type { Backoff, Store } from "../store/store.ts";
import { type BackoffPolicy, backoffDelay, backsOffDestination, isRetryable } from "./backoff.ts";
import { Bookings } from "./bookings.ts";
import type { Cluster, Landed, SharedLimiter } from "../cluster/cluster.ts";
import { serverOf } from "../matrix/user-id.ts";
import { decodeLanded, landedFailure, landedOk } from "./landed.ts";

export type RefreshOutcome =
  /**
   * `changed`: the list differs from what the requester's clients were shown (heal.ts). `late`:
   * joined a fetch whose fan-out had begun, so the requester's devices were not told by it.
   */
  | { kind: "ok"; snapshot: DeviceSnapshot; fromCache: boolean; changed: boolean; late?: boolean }
  | { kind: "local" }
  /**
   * `landed`: the outcome once the fetch ends (never rejects), for the caller to tell the
   * requester's devices when the fan-out could not have (a late join, another replica's fetch).
   */
  | { kind: "pending"; landed?: Promise<RefreshOutcome> }
  | { kind: "limited"; retryAfterMs: number }
  | { kind: "failed"; error: FederationError; nextRetryInMs?: number };

export interface ResyncOptions {
  store: Store;
  serverName: string;
  fetchDevices: (userId: string) => Promise<{ snapshot: DeviceSnapshot }>;
  /** Called after every fresh snapshot is stored: delivery adds pending rows and wakes long-polls. */
  onSnapshot?: (s: DeviceSnapshot) => void | Promise<void>;
  /**
   * When set, replaces storing + onSnapshot: decides whether the fresh list is a real change
   * (heal.ts) and delivers it only then. Returns whether it did.
   */
  onFresh?: (s: DeviceSnapshot, ctx: ResyncContext) => Promise<boolean>;
  onFailure?: (userId: string, e: FederationError) => void;
  /** A remote answer older than the stored snapshot was kept out (metrics). */
  onStaleAnswer?: (userId: string) => void;
  refreshCacheMs: number;
  retry: BackoffPolicy;
  maxAttempts: number;
  probeIntervalMs: number;
  /**
   * Due retries are claimed for this long under this holder's name (Store.claimDueRetries):
   * with replicas sharing the store, one runs each, and another takes it over after the lease.
   */
  retryLease?: { holder: string; ms: number };
  limits: { requester: SharedLimiter; target: SharedLimiter };
  /**
   * Replicas sharing a database (cluster/): one fetch per target across all of them. Absent or
   * not shared: this process's in-flight map is the single flight.
   */
  cluster?: Cluster;
  log: Logger;
  now?: () => number;
}

/**
 * Why a fetch was started: the `trigger` label of resync_heals_total (docs/operations.md). A
 * retry keeps the trigger of the fetch that failed (stored with the retry entry).
 */
export const TRIGGERS = ["endpoint", "to_device", "keys_query", "audit", "admin"] as const;
export type Trigger = (typeof TRIGGERS)[number];

/** A stored retry's trigger; entries written before it was stored came from explicit refreshes. */
export function triggerOf(stored: string | undefined): Trigger {
  return (TRIGGERS as readonly string[]).includes(stored ?? "") ? (stored as Trigger) : "endpoint";
}

export interface ResyncContext {
  trigger: Trigger;
  /** What raised it (a suspicion's signal), for the heal's log line. */
  why?: string;
  /**
   * The access token of the device whose traffic raised the question, to ask the homeserver
   * for its view when we have none (delivery/views.ts). Memory only: never stored or logged.
   */
  token?: string;
  /** Schedule retries when the fetch fails (explicit refreshes); background checks do not. */
  retry?: boolean;
  /**
   * A check of the audit's walk (resync/audit.ts), which looks for silent staleness: a list the
   * homeserver is reporting in motion is left to the next pass (resync/heal.ts). Not set for an
   * overlay's re-verification, also counted as "audit", which that very report starts.
   */
  walk?: boolean;
}

/** What a background check (a suspicion, the audit) did. */
export type BackgroundStart = "started" | "joined" | "cached" | "limited" | "backoff" | "local";

/** A fetch's outcome, held for the cache window (Resyncer.#recent). */
interface Outcome {
  snapshot: DeviceSnapshot;
  changed: boolean;
  elsewhere?: boolean;
}

/**
 * Outcomes are held at least this long, however short the cache window (0 included): a fetch's
 * own callers read whether it changed anything once it has landed (#ok, #sharedFlight).
 */
const RECENT_MIN_MS = 5_000;
/** Devices held in outcomes at most (MAX_DEVICES lists: at least 20 of them). */
const RECENT_MAX_DEVICES = 20 * (MAX_DEVICES + 1);
/** Outcomes past their window are looked for at most this often (a walk over all of them). */
const SWEEP_MS = 1_000;

/** The key of a target's fetch among the replicas (Cluster.flight, Cluster.peek). */
const flightKey = (target: string) => `devices:${target}`;

/** A shared limit refused the fetch a refresh was about to start (its joiners are refused too). */
class Limited extends Error {
  readonly retryAfterMs: number;
  constructor(retryAfterMs: number) {
    super("rate limited");
    this.retryAfterMs = retryAfterMs;
  }
}

class RefreshFailure extends Error {
  readonly error: FederationError;
  readonly nextRetryInMs?: number;
  constructor(error: FederationError, nextRetryInMs?: number) {
    super(error.message);
    this.error = error;
    if (nextRetryInMs !== undefined) this.nextRetryInMs = nextRetryInMs;
  }
}

export class Resyncer {
  readonly #o: ResyncOptions;
  readonly #now: () => number;
  readonly #inflight = new Map<string, Promise<DeviceSnapshot>>();
  readonly #bookings = new Bookings();
  // The last outcome per user, for the cache window: an unchanged list is not stored as a
  // snapshot (it must not be served as an overlay), yet a second question within the window
  // must cost nothing either. Outcomes past the window answer nothing and are dropped (#remember):
  // the audit walks every tracked user, and each whole snapshot held until 50,000 users had come
  // round was most of the proxy's growth over a pass (docs/performance.md, ninth session).
  // `elsewhere`: the outcome of a fetch another replica made (its lease, cluster/pg-flight.ts).
  // Bounded by devices too: a burst of 1000-device lists within one window would otherwise hold
  // 50,000 of them; past the bound the least recently used answer from the store or fetch again.
  readonly #recent = new LRUCache<string, Outcome>({
    max: 50_000,
    maxSize: RECENT_MAX_DEVICES,
    sizeCalculation: (o) => Object.keys(o.snapshot.devices).length + 1,
  });
  #sweptAt = -Infinity;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #scheduled = 0;
  #stopped = true;
  #unfollow: (() => void) | undefined;

  constructor(o: ResyncOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
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
    return this.#recent.calculatedSize;
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
    const stored = this.#inflight.has(target) || this.#recentHit(target) ? undefined : await this.#stored(target);

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
    const answer = this.#await(target, running, waitMs, late);
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
      this.#schedule();
    });
    p.catch(() => {});
    this.#inflight.set(target, p);
    return p;
  }

  /**
   * Holds an outcome for the cache window, and drops those whose window is over: looked for at
   * most once a SWEEP_MS, over all of them (one read within the window is not the least recently
   * used, so the oldest are not all at the end).
   */
  #remember(target: string, outcome: Outcome): void {
    this.#recent.set(target, outcome);
    const now = this.#now();
    if (now - this.#sweptAt < SWEEP_MS) return;
    this.#sweptAt = now;
    const keep = Math.max(this.#o.refreshCacheMs, RECENT_MIN_MS);
    const over: string[] = [];
    this.#recent.forEach((o, k) => {
      if (now - o.snapshot.fetchedAt >= keep && k !== target) over.push(k);
    });
    for (const k of over) this.#recent.delete(k);
  }

  #recentHit(target: string): boolean {
    const r = this.#recent.get(target);
    return r !== undefined && this.#now() - r.snapshot.fetchedAt < this.#o.refreshCacheMs;
  }

  /**
   * The stored snapshot and the destination's backoff, read together; with replicas, what the
   * last fetch of target on any of them left (Cluster.peek), read at `at`.
   */
  async #stored(target: string): Promise<{
    snapshot: DeviceSnapshot | undefined;
    backoff: Backoff | undefined;
    elsewhere: Landed | "running" | undefined;
    at: number;
  }> {
    const o = this.#o;
    const at = this.#now();
    const [snapshot, backoff, elsewhere] = await Promise.all([
      o.store.getSnapshot(target),
      o.store.getBackoff(serverOf(target)),
      // A failing read only costs what it would have saved: the refresh then takes a target
      // token, and the lease's own statements report the database.
      o.cluster?.shared ? o.cluster.peek(flightKey(target), o.refreshCacheMs).catch(() => undefined) : undefined,
    ]);
    return { snapshot, backoff, elsewhere, at };
  }

  /**
   * The last outcome for target, if within the cache window (`snap`: the stored snapshot,
   * `elsewhere`: what another replica's fetch left, both read before). An unchanged list is not
   * stored, so without the outcome another replica landed this replica would fetch again, where
   * one process answers from its cache.
   */
  #cached(
    target: string,
    snap: DeviceSnapshot | undefined,
    elsewhere?: Landed | "running",
  ): { snapshot: DeviceSnapshot; changed: boolean } | undefined {
    const window = this.#o.refreshCacheMs;
    const r = this.#recent.get(target);
    if (r && this.#now() - r.snapshot.fetchedAt < window) return r;
    if (elsewhere !== undefined && elsewhere !== "running") {
      const d = decodeLanded(elsewhere);
      if (d.ok) {
        const landed = { snapshot: d.snapshot, changed: d.changed, elsewhere: true };
        this.#remember(target, landed);
        return landed;
      }
    }
    if (snap && this.#now() - snap.fetchedAt < window) return { snapshot: snap, changed: true };
    return undefined;
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
    if (this.#recentHit(target)) return "cached";
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
    return this.#await(target, this.run(target, requestedBy, ctx), waitMs);
  }

  /**
   * Start (or join) the single fetch for target. Failures are recorded and rescheduled here.
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
      this.#schedule();
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
    return this.#sharedFlight(cluster, target, requestedBy, ctx, after, freshMs);
  }

  async #sharedFlight(
    cluster: Cluster,
    target: string,
    requestedBy: string[],
    ctx: ResyncContext,
    after: Promise<unknown> | undefined,
    freshMs: number,
  ): Promise<DeviceSnapshot> {
    let own: { snapshot: DeviceSnapshot } | { error: unknown } | undefined;
    const landed = await cluster.flight(
      flightKey(target),
      async () => {
        try {
          const snapshot = await this.#fetch(target, requestedBy, ctx, after);
          own = { snapshot };
          return landedOk(snapshot, this.#recent.get(target)?.changed ?? true);
        } catch (e) {
          own = { error: e };
          return e instanceof RefreshFailure ? landedFailure(e, e.error, e.nextRetryInMs) : landedFailure(e);
        }
      },
      freshMs,
    );
    if (own && "snapshot" in own) return own.snapshot;
    if (own) throw own.error;
    const d = decodeLanded(landed);
    if (d.ok) {
      this.#remember(target, { snapshot: d.snapshot, changed: d.changed, elsewhere: true });
      return d.snapshot;
    }
    if ("unavailable" in d) throw d.unavailable;
    throw new RefreshFailure(d.error, d.nextRetryInMs);
  }

  async #fetch(
    target: string,
    requestedBy: string[],
    ctx: ResyncContext,
    after?: Promise<unknown>,
  ): Promise<DeviceSnapshot> {
    const o = this.#o;
    const dest = serverOf(target);
    try {
      await after;
      const { snapshot } = await o.fetchDevices(target);
      await o.store.clearBackoff(dest);
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
      await this.#bookings.seal(target);
      if (o.onFresh) changed = await this.#decide(snapshot, ctx);
      else {
        await o.store.putSnapshot(snapshot);
        await o.onSnapshot?.(snapshot);
      }
      this.#remember(target, { snapshot, changed });
      return snapshot;
    } catch (err) {
      // Our store failed, or the database the replicas share (a destination slot, cluster/), not
      // the remote: nothing is recorded against the destination (the caller answers 503, a retry
      // entry stays as it was).
      if (err instanceof StoreUnavailable) throw err;
      const e =
        err instanceof FederationError ? err : new FederationError("transport", String((err as Error)?.message ?? err));
      const now = this.#now();
      let destRetryAt = 0;
      if (backsOffDestination(e)) {
        const b = await o.store.getBackoff(dest);
        const failures = (b?.failures ?? 0) + 1;
        destRetryAt = now + backoffDelay(o.retry, failures);
        // A background check (ctx.retry false: a suspicion, the audit) does not use up the probe
        // an explicit refresh may make: a person asking next gets the server tried for them.
        const firstProbe = ctx.retry === false ? 0 : now;
        await o.store.putBackoff({
          destination: dest,
          failures,
          retryAt: destRetryAt,
          lastProbeAt: b?.lastProbeAt ?? firstProbe,
        });
      }
      o.onFailure?.(target, e);
      if (ctx.retry === false) throw new RefreshFailure(e);
      if (!isRetryable(e)) {
        await o.store.deleteRetry(target);
        throw new RefreshFailure(e);
      }
      const prev = await o.store.getRetry(target);
      const attempts = (prev?.attempts ?? 0) + 1;
      if (attempts > o.maxAttempts) {
        await o.store.deleteRetry(target);
        o.log.warn("giving up refreshing a device list", { userId: target, attempts: attempts - 1, error: e.message });
        throw new RefreshFailure(e);
      }
      const dueAt = Math.max(now + backoffDelay(o.retry, attempts), destRetryAt);
      const who = [...new Set([...(prev?.requestedBy ?? []), ...requestedBy])].slice(-50);
      await o.store.putRetry({
        userId: target,
        attempts,
        dueAt,
        requestedBy: who,
        lastError: e.message,
        trigger: ctx.trigger,
      });
      this.#retriesMoved();
      o.log.info("device list refresh failed; retry scheduled", {
        userId: target,
        attempts,
        inMs: dueAt - now,
        error: e.message,
      });
      throw new RefreshFailure(e, dueAt - now);
    }
  }

  /** The fresh list went to heal.ts; a fault there (the store) must not count as the remote's. */
  async #decide(snapshot: DeviceSnapshot, ctx: ResyncContext): Promise<boolean> {
    try {
      return await this.#o.onFresh!(snapshot, ctx);
    } catch (e) {
      this.#o.log.warn("could not compare a fresh device list with the homeserver's view", {
        userId: snapshot.userId,
        error: String((e as Error)?.message ?? e),
      });
      return false;
    }
  }

  /** A destination in backoff, its probe used: the refresh waits in the retry queue. */
  async #backedOff(target: string, requester: string, b: Backoff, trigger: Trigger): Promise<RefreshOutcome> {
    const o = this.#o;
    const dest = serverOf(target);
    const now = this.#now();
    const prev = await o.store.getRetry(target);
    const requestedBy = [...new Set([...(prev?.requestedBy ?? []), requester])].slice(-50);
    await o.store.putRetry({
      userId: target,
      attempts: prev?.attempts ?? 0,
      dueAt: b.retryAt,
      requestedBy,
      lastError: prev?.lastError ?? "destination in backoff",
      trigger,
    });
    this.#retriesMoved();
    this.#schedule();
    const error = new FederationError("transport", `${dest} is unreachable and in backoff; not contacting it yet`);
    return { kind: "failed", error, nextRetryInMs: b.retryAt - now };
  }

  async #await(target: string, p: Promise<DeviceSnapshot>, waitMs: number, late = false): Promise<RefreshOutcome> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<"pending">((r) => (timer = setTimeout(() => r("pending"), waitMs)));
    try {
      const r = await Promise.race([p, deadline]);
      if (r === "pending") {
        // Answered before the fetch ended: its outcome still decides who must be told.
        const landed = p.then(
          (s) => this.#ok(target, s, late),
          (e) => this.#notOk(e, { kind: "pending" }),
        );
        return { kind: "pending", landed };
      }
      return this.#ok(target, r, late);
    } catch (e) {
      return this.#notOk(e);
    } finally {
      clearTimeout(timer);
    }
  }

  #ok(target: string, snapshot: DeviceSnapshot, late: boolean): RefreshOutcome {
    const recent = this.#recent.get(target);
    // Another replica's fetch is, to this one, a cache hit: the asker's devices are told here.
    return {
      kind: "ok",
      snapshot,
      fromCache: recent?.elsewhere === true,
      changed: recent?.changed ?? true,
      ...(late ? { late } : {}),
    };
  }

  /** A failed fetch's outcome; anything else is rethrown, or with `otherwise` given, that. */
  #notOk(e: unknown, otherwise?: RefreshOutcome): RefreshOutcome {
    if (e instanceof RefreshFailure) return { kind: "failed", error: e.error, nextRetryInMs: e.nextRetryInMs };
    if (e instanceof Limited) return { kind: "limited", retryAfterMs: e.retryAfterMs };
    if (otherwise) return otherwise;
    throw e;
  }

  // The retry loop: one timer, set for the earliest due retry (at most 30 s away, so an entry
  // written by another process is seen too). Due entries start concurrently: one slow
  // destination never holds up another (the transport caps each destination at 3). Replicas
  // tell each other of every retry they schedule: each then knows when the entry is due, and
  // when a claim on it ends, so one whose claimer died is taken over as its lease ends.
  start(): void {
    this.#stopped = false;
    const cluster = this.#o.cluster;
    this.#unfollow ??= cluster?.shared
      ? cluster.subscribe((e) => {
          if (e.kind === "retries" || e.kind === "resubscribed") this.#schedule();
        })
      : undefined;
    this.#schedule();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#unfollow?.();
    this.#unfollow = undefined;
  }

  #retriesMoved(): void {
    if (this.#o.cluster?.shared) this.#o.cluster.publish({ kind: "retries" });
  }

  #schedule(): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    // Only the latest call sets the timer: an earlier read may answer after a later one.
    const seq = ++this.#scheduled;
    this.#o.store.nextRetryAt().then(
      (next) => this.#arm(seq, next),
      () => this.#arm(seq, this.#now() + 5_000), // a failing store (logged by its guard): look again soon
    );
  }

  #arm(seq: number, next: number | undefined): void {
    if (this.#stopped || seq !== this.#scheduled) return;
    clearTimeout(this.#timer);
    // At least 50 ms: a due entry whose fetch is still in flight must not spin the loop.
    const delay = next === undefined ? 30_000 : Math.min(30_000, Math.max(50, next - this.#now()));
    this.#timer = setTimeout(() => void this.#tick(), delay);
    this.#timer.unref?.();
  }

  async #tick(): Promise<void> {
    const now = this.#now();
    try {
      const lease = this.#o.retryLease ?? { holder: "local", ms: 60_000 };
      for (const r of await this.#o.store.claimDueRetries(now, 200, lease.holder, lease.ms)) {
        if (this.#inflight.has(r.userId)) continue;
        const b = await this.#o.store.getBackoff(serverOf(r.userId));
        if (b && b.retryAt > now) {
          await this.#o.store.putRetry({ ...r, dueAt: b.retryAt });
          continue;
        }
        void this.run(r.userId, r.requestedBy, { trigger: triggerOf(r.trigger), retry: true }).catch(() => {});
      }
    } catch {
      // A failing store (its guard logs it): the loop carries on, and the entries stay due.
    }
    this.#schedule();
  }
}
