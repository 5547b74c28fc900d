// GET /sync in the Bun front end. Nearly every /sync has nothing for us to add: it then goes
// straight to the homeserver from here, as bytes, instead of through the node:http app (two
// more hops, two more descriptors per held long-poll). The plan is delivery's, the same one the
// app's sync route (routes/sync.ts) asks (delivery/sync-plan.ts: acknowledge `since`, inject
// when something is pending, otherwise stream, watch the homeserver's own device_lists.changed
// while overlays exist, answer a waiting long-poll early when a refresh lands); this decides,
// per request, which of the two engines serves it.
import { deviceKey, type Waiter } from "../../delivery/waiters.ts";
import type { BodySplice } from "../../delivery/json/sync-splice.ts";
import {
  answerAtOnce,
  bookInjection,
  injectPending,
  planSync,
  reportedWatch,
  safeWakeAnswer,
  type SyncDecision,
  holdAfterPlan,
  spliceStarts,
} from "../../delivery/sync-plan.ts";
import type { Services } from "../../routes/context.ts";
import { type Requester, tokenOf } from "../../http/auth.ts";
import { bothObservers } from "../../delivery/to-device-watch.ts";
import { toDeviceWatch, watchedSplice } from "../../resync/self-heal.ts";
import { upstreamTarget } from "../../delivery/tokens.ts";
import { fieldValue, type RequestHead } from "./head.ts";
import { NAME } from "./names.ts";
import type { BodyObserver } from "./response.ts";

/** How the front end serves one GET /sync: always through the homeserver hop. */
export interface SyncPlan {
  /** The body is to be read (observer()): ask for it uncompressed. */
  readonly observes: boolean;
  /**
   * Overlays exist: read its device_lists.changed; detection is on: its to-device events. Asked
   * only once a readable 200 head arrives: a held long-poll would otherwise keep a reader, its
   * buffers and its closures for minutes (docs/performance.md, idle long-polls).
   */
  observer(): BodyObserver | undefined;
  /** Deliveries are pending: ask the homeserver to answer at once, and splice into its body. */
  readonly inject: { target: string; splice(): BodySplice } | undefined;
  /** A long-poll a refresh may answer early (docs/architecture.md "Early wake"). */
  readonly longPoll: LongPoll | undefined;
}

export interface LongPoll {
  hold(w: Waiter): void;
  release(w: Waiter): void;
  /** The body of the early answer, built when the wake comes (the store books what it carries). */
  wakeBody(): string | Promise<string>;
}

/** "app": the node:http app's sync route serves it (front-end threads other than the main one). */
export type SyncRoute = SyncPlan | "app";

export interface SyncGate {
  plan(head: RequestHead): SyncRoute | Promise<SyncRoute>;
}

/** What a plan depends on, read from the request: only a /sync with both gets one. */
export interface SyncRequest {
  target: string;
  token: string;
  since: string;
  longPoll: boolean;
}

/** Whom an early answer goes to, and from which position (a worker thread hands it back). */
export interface Ticket {
  userId: string;
  deviceId: string;
  since: string;
}

export const PLAIN: SyncPlan = { observes: false, observer: () => undefined, inject: undefined, longPoll: undefined };

/** The request's `since`, token and timeout; undefined when it is not one we act on. */
export function syncRequest(head: RequestHead): SyncRequest | undefined {
  const target = head.target;
  const q = target.indexOf("?");
  // An initial sync (no `since`) is never injected into, and has no device_lists.changed.
  if (q === -1) return undefined;
  const params = new URLSearchParams(target.slice(q + 1));
  const since = params.get("since");
  if (!since) return undefined;
  const token = tokenOf(fieldValue(head, NAME.AUTHORIZATION), target);
  // Without a token that resolves, the homeserver answers as it would (401 and all).
  if (!token) return undefined;
  return { target, token, since, longPoll: Number(params.get("timeout") ?? 0) > 0 };
}

/** The early answer's body (docs/architecture.md "Early wake"). */
export async function wakeBodyFor(svc: Services, t: Ticket): Promise<string> {
  return JSON.stringify(await safeWakeAnswer(svc, t, t.since, "sync"));
}

// One per request, held as long as a long-poll is: a class rather than closures, which cost
// more memory per held poll (docs/performance.md, idle long-polls).
export class DevicePoll implements SyncPlan, LongPoll {
  readonly #svc: Services;
  readonly #who: Requester;
  readonly #key: string;
  readonly #since: string;
  readonly #plan: SyncDecision;
  /** The suffix of ours the spliced answer's token gets, once booked (book()). */
  #mark = "";
  readonly longPoll: LongPoll | undefined;
  readonly inject: SyncPlan["inject"];

  constructor(svc: Services, who: Requester, target: string, since: string, plan: SyncDecision) {
    this.#svc = svc;
    this.#who = who;
    this.#key = deviceKey(who.userId, who.deviceId);
    this.#since = since;
    this.#plan = plan;
    // The homeserver never sees our suffix on `since` (tokens.ts).
    this.inject = plan.inject
      ? {
          target: answerAtOnce(upstreamTarget(target)),
          splice: () =>
            watchedSplice(
              injectPending(svc, who, plan.targets, "sync", this.#mark),
              toDeviceWatch(svc.heal, who, "sync"),
            ),
        }
      : undefined;
    this.longPoll = plan.hold ? this : undefined;
  }

  /** Overlays exist: the body is to be read for the homeserver's own report. */
  get reports(): boolean {
    return this.#svc.overlays.active && !this.inject;
  }

  /** Detection is on: the body's to-device events are to be read (resync/detect.ts). */
  get detects(): boolean {
    return this.#svc.heal?.detector !== undefined && !this.inject;
  }

  get observes(): boolean {
    return this.reports || this.detects;
  }

  observer(): BodyObserver | undefined {
    const reported = this.reports ? reportedWatch(this.#svc) : undefined;
    return bothObservers(reported, this.detects ? toDeviceWatch(this.#svc.heal, this.#who, "sync") : undefined);
  }

  /**
   * Books the injected answer's suffix (sync-plan.ts bookInjection) before the request even
   * goes to the homeserver, so before its head can reach the client; false on a failing store.
   */
  async book(): Promise<boolean> {
    const mark = await bookInjection(this.#svc, this.#who, this.#plan.targets);
    if (mark === undefined) return false;
    this.#mark = mark;
    return true;
  }

  /**
   * This front end splices the answer: no progress until the splice carries it. An answer it
   * cannot read (a compressed one) leaves the next poll to the app's route, which answers it
   * itself (routes/sync.ts).
   */
  splicesHere(): void {
    spliceStarts(this.#svc, this.#who);
  }

  get ticket(): Ticket {
    return { userId: this.#who.userId, deviceId: this.#who.deviceId, since: this.#since };
  }

  hold(w: Waiter): void {
    this.#svc.delivery.waiters.add(this.#key, w);
    holdAfterPlan(this.#svc, this.#who, this.#plan, () => w.wake());
  }

  release(w: Waiter): void {
    this.#svc.delivery.waiters.remove(this.#key, w);
  }

  wakeBody(): Promise<string> {
    return wakeBodyFor(this.#svc, this.ticket);
  }
}

export interface MainSyncGate extends SyncGate {
  /** The plan for a parsed request (a front-end thread asks the main one). */
  planFor(r: SyncRequest): PlanFor | Promise<PlanFor>;
}

/** "app": pending, but the last answer-at-once poll made no progress: the app answers it. */
export type PlanFor = DevicePoll | typeof PLAIN | "app";

export function createSyncGate(svc: Services): MainSyncGate {
  const decide = async (who: Requester, r: SyncRequest): Promise<PlanFor> => {
    // Appservice and some admin tokens have no device: nothing can be pending for them.
    if (!who.deviceId) return PLAIN;
    const plan = await planSync(svc, {
      userId: who.userId,
      deviceId: who.deviceId,
      since: r.since,
      asked: true,
      longPoll: r.longPoll,
    });
    // A failing store: the poll goes through plain (docs/operations.md, "When the store fails").
    if (!plan.storeOk) return PLAIN;
    // The app's route answers it itself (the same plan, asked again there).
    if (plan.answerHere) return "app";
    return new DevicePoll(svc, who, r.target, r.since, plan);
  };
  const here = (p: PlanFor): SyncRoute | Promise<SyncRoute> => {
    if (!(p instanceof DevicePoll && p.inject)) return p;
    // A failing store: the poll goes through plain, as when the plan could not read it.
    return p.book().then((booked) => {
      if (!booked) return PLAIN;
      p.splicesHere();
      return p;
    });
  };
  function planFor(r: SyncRequest) {
    const known = svc.auth.cached(r.token);
    if (known) return decide(known, r);
    return svc.auth.resolveToken(r.token).then(
      (who) => decide(who, r),
      (): PlanFor => PLAIN,
    );
  }
  return {
    planFor,
    plan(head) {
      const r = syncRequest(head);
      if (!r) return PLAIN;
      const p = planFor(r);
      return p instanceof Promise ? p.then(here) : here(p);
    },
  };
}
