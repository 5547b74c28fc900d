// The one /sync plan (docs/architecture.md "Delivery"), asked by both engines: the node:http
// app's route (routes/sync.ts) and the Bun front end's gate (engine/bun/sync-gate.ts). It
// acknowledges the position the client resumes from, decides whether pending deliveries are
// injected (the homeserver asked to answer at once, its body spliced) or answered by us, and
// whether a long-poll is held for an early wake; the answers it builds are below.
import type { Metrics } from "../observe/metrics.ts";
import type { Requester } from "../http/auth.ts";
import type { Store } from "../store/store.ts";
import { storeFallback } from "../store/store-guard.ts";
import type { Delivery } from "./delivery.ts";
import { ReportedWatch } from "./json/reported-watch.ts";
import { type BodySplice, SyncSplice } from "./json/sync-splice.ts";
import type { Overlays } from "./overlays.ts";
import { type SyncFlavour, wakeResponse } from "./json/sync-inject.ts";
import { markOf, newMark, withMark } from "./tokens.ts";

/** What the plan reads and writes (the routes' Services has all of it). */
export interface SyncDeps {
  store: Store;
  delivery: Delivery;
  overlays: Overlays;
  metrics?: Metrics;
}

export interface SyncAsk {
  userId: string;
  deviceId: string;
  /** The position the request resumes from (sync's `since`, sliding sync's `pos`); "" for none. */
  since: string;
  /** Sliding sync's connection (conn_id); undefined for /sync. */
  conn?: string;
  /** The request wants device-list changes from us (always for /sync; sliding sync's e2ee extension). */
  asked: boolean;
  /** A long-poll: a `since` and a timeout above 0. */
  longPoll: boolean;
}

export interface SyncDecision {
  /** False: the store failed, so nothing is acknowledged, injected or held (docs/operations.md, "When the store fails"). */
  storeOk: boolean;
  /**
   * Pending, but the last answer-at-once poll could not carry the delivery (tokens.ts,
   * delivery.ts): answer this one ourselves (safeWakeAnswer) rather than loop at timeout=0.
   */
  answerHere: boolean;
  /** Pending: ask the homeserver to answer at once (answerAtOnce) and splice (injectPending). */
  inject: boolean;
  /** Hold the long-poll so a refresh that lands may answer it early (docs/architecture.md "Early wake"). */
  hold: boolean;
  /** The users pending for this device (or connection) when planned: what an injection carries. */
  targets: string[];
  /** Waiters' wake count when planned: a hold compares it (holdAfterPlan). */
  wakes: number;
}

export async function planSync(d: SyncDeps, a: SyncAsk): Promise<SyncDecision> {
  // Before the store is read: a wake after this point may have found no waiter to answer.
  const wakes = d.delivery.waiters.wakes;
  const targets = await storeFallback(async () => {
    if (a.asked && a.conn !== undefined) await d.delivery.openConn(a.userId, a.deviceId, a.conn);
    // Only positions of ours ever carry a delivery (tokens.ts): the homeserver's own token, what
    // nearly every poll resumes from, acknowledges nothing, and costs no write. The answer that
    // gave this position booked its suffix before any of it went out (bookInjection), so the
    // booking is committed, whichever replica wrote it, by the time the client can send it.
    const mark = a.asked ? markOf(a.since) : undefined;
    if (mark !== undefined) await d.store.ackToken(a.userId, a.deviceId, mark, a.conn);
    if (!a.asked || a.since === "" || !(await d.store.hasPending(a.userId, a.deviceId, a.conn))) return [];
    // The rows themselves: an injection carries these, so its booking (bookInjection) needs no
    // read of its own.
    return pendingTargets(d, a, a.conn);
  }, undefined);
  const storeOk = targets !== undefined;
  const pending = storeOk && targets.length > 0;
  const answerHere = pending && !d.delivery.mayForce(a.userId, a.deviceId, a.conn ?? "");
  const inject = pending && !answerHere;
  const hold = a.longPoll && a.asked && storeOk && !inject && !answerHere;
  return { storeOk, answerHere, inject, hold, targets: targets ?? [], wakes };
}

/**
 * The long-poll is held now, some turns after its plan read the store: a refresh that landed in
 * between found no waiter to wake. Look again then (rarely: only when some wake happened).
 */
export function holdAfterPlan(
  d: SyncDeps,
  who: { userId: string; deviceId: string },
  plan: SyncDecision,
  wake: () => void,
  conn?: string,
): void {
  if (d.delivery.waiters.wakes === plan.wakes) return;
  void storeFallback(() => d.store.hasPending(who.userId, who.deviceId, conn), false).then((p) => p && wake());
}

/**
 * Before an injected answer's first byte goes to the client: its position's suffix of ours
 * (tokens.ts) is chosen now and booked on the pending rows it carries, committed. The client
 * can acknowledge the answer only with a position it has read, so its next poll finds the
 * booking on the shared store whichever replica, or connection, it arrives on (docs/architecture.md
 * "Exact acknowledgements"). A suffix booked for an answer that never reaches the client is
 * never sent back, and acknowledges nothing. Undefined on a failing store: the answer then
 * goes through without injection (docs/operations.md, "When the store fails").
 */
export function bookInjection(
  d: SyncDeps,
  who: { userId: string; deviceId: string },
  targets: string[],
  conn?: string,
): Promise<string | undefined> {
  const mark = newMark();
  // Users the homeserver lists in `left` are skipped by the splice but booked too: the client
  // no longer tracks them.
  return storeFallback(async () => {
    await d.store.markCarried(who.userId, who.deviceId, targets, mark, conn);
    return mark;
  }, undefined);
}

/**
 * The engine splices the answer itself: counted as no progress until the splice reports the
 * delivery carried under our suffix (injectPending), so an answer that cannot be spliced, or one cut short, leaves the
 * stream to be answered by us next time.
 */
export function spliceStarts(d: SyncDeps, who: { userId: string; deviceId: string }, conn?: string): void {
  d.delivery.forcedWithoutProgress(who.userId, who.deviceId, conn ?? "", true);
}

/** The users whose changes are pending for this device (and sliding-sync connection). */
export async function pendingTargets(
  d: SyncDeps,
  who: { userId: string; deviceId: string },
  conn?: string,
): Promise<string[]> {
  return (await d.store.pendingFor(who.userId, who.deviceId, conn)).map((p) => p.target);
}

/** Reads the homeserver's own device_lists.changed while overlays exist (overlays.ts). */
export function reportedWatch(d: SyncDeps, flavour?: SyncFlavour): ReportedWatch {
  return new ReportedWatch((users) => d.overlays.homeserverReported(users), flavour);
}

/** The target with `timeout=0`: the only change we ever make to a forwarded target. */
export function answerAtOnce(target: string): string {
  return target.replace(/([?&])timeout=\d+/, "$1timeout=0");
}

/**
 * The answer that ends a waiting long-poll early, carrying every pending user (docs/architecture.md
 * "Early wake"); also our answer to a poll whose stream could not be answered at once.
 * Its position is the request's own, with our suffix (tokens.ts): the client asks again from
 * the same point, so no event is skipped, and that request acknowledges exactly this answer.
 */
async function wakeAnswer(
  svc: SyncDeps,
  who: { userId: string; deviceId: string },
  since: string,
  flavour: SyncFlavour,
  conn?: string,
): Promise<Record<string, unknown>> {
  const targets = await pendingTargets(svc, who, conn);
  const mark = newMark();
  // Committed before the answer goes out: the suffix of the token it carries acknowledges these rows.
  await svc.store.markCarried(who.userId, who.deviceId, targets, mark, conn);
  const token = withMark(since, mark);
  svc.metrics?.wakes.inc();
  svc.metrics?.injections.inc({ endpoint: flavour }, targets.length);
  return wakeResponse(token, targets, flavour);
}

/**
 * wakeAnswer, or on a failing store an answer with nothing in it at the request's own position:
 * the poll has been taken from the homeserver already, and the client simply asks again.
 */
export async function safeWakeAnswer(
  svc: SyncDeps,
  who: { userId: string; deviceId: string },
  since: string,
  flavour: SyncFlavour,
  conn?: string,
): Promise<Record<string, unknown>> {
  return (
    (await storeFallback(() => wakeAnswer(svc, who, since, flavour, conn), undefined)) ??
    wakeResponse(since, [], flavour)
  );
}

/**
 * A sync response body with deliveries pending for the requester: the pending users spliced
 * into device_lists.changed as it streams, and its token given our suffix `mark`, which
 * bookInjection booked on those rows before the answer started.
 */
export function injectPending(
  svc: SyncDeps,
  who: Requester,
  targets: string[],
  flavour: SyncFlavour,
  mark: string,
  conn?: string,
): BodySplice {
  return new SyncSplice(
    targets,
    flavour,
    (spliced) => {
      svc.overlays.homeserverReported(spliced.reported);
      // A body whose token went out unchanged carried nothing the client can acknowledge: the
      // stream stays "no progress", and the next poll is answered by us.
      if (spliced.token === undefined) return;
      svc.delivery.forcedWithoutProgress(who.userId, who.deviceId, conn ?? "", false);
      svc.metrics?.injections.inc({ endpoint: flavour }, spliced.added.length);
    },
    (token) => withMark(token, mark),
  );
}
