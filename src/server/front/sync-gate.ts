// GET /sync in the Bun front end. Nearly every /sync has nothing for us to add: it then goes
// straight to the homeserver from here, as bytes, instead of through the node:http app (two
// more hops, two more descriptors per held long-poll). The app's sync route (routes/sync.ts)
// still does the injection itself; this decides, per request, which of the two serves it, with
// the same rules: acknowledge `since`, inject when something is pending, otherwise stream,
// watch the homeserver's own device_lists.changed while overlays exist, and answer a waiting
// long-poll early when a refresh lands.
import { TopLevelCapture } from "../../delivery/json-capture.ts";
import { deviceKey } from "../../delivery/waiters.ts";
import { reportedChanged, wakeResponse } from "../../delivery/sync-inject.ts";
import type { Services } from "../app.ts";
import { type Requester, tokenOf } from "../auth.ts";
import { answerAtOnce, injectPending } from "../../routes/sync.ts";
import { fieldValue, type RequestHead } from "./head.ts";
import { NAME } from "./names.ts";
import type { BodyObserver } from "./response.ts";

/** The homeserver serves it; what we do alongside. */
export interface DirectSync {
  /** Overlays exist: ask for an uncompressed body and read its device_lists.changed. */
  observe?: () => BodyObserver;
  /** Deliveries are pending: ask the homeserver to answer at once, and rewrite its body. */
  inject?: { target: string; rewrite(payload: Buffer): Buffer };
  /** A long-poll: register `wake` for the device; returns the unregister function. */
  wait?: (wake: () => void) => () => void;
  /** The body of an early answer (DESIGN.md "early wake"), built when the wake comes. */
  wakeBody(): string;
}

export type SyncPlan = DirectSync;

export interface SyncGate {
  plan(head: RequestHead): SyncPlan | Promise<SyncPlan>;
}


const PLAIN: DirectSync = { wakeBody: () => "" };

export function createSyncGate(svc: Services): SyncGate {
  function decide(who: Requester, target: string, since: string, longPoll: boolean): SyncPlan {
    const { userId, deviceId } = who;
    svc.store.ackToken(userId, deviceId, since);
    const key = deviceKey(userId, deviceId);
    if (svc.store.hasPending(userId, deviceId)) {
      // The same rules as the app's route (routes/sync.ts), without its two extra hops.
      return { inject: { target: answerAtOnce(target), rewrite: (raw) => injectPending(svc, who, raw, "sync") }, wakeBody: () => "" };
    }
    return {
      observe: svc.overlays.active ? () => watchReported((users) => svc.overlays.homeserverReported(users)) : undefined,
      wait: longPoll ? (wake) => svc.delivery.waiters.wait(key, wake) : undefined,
      wakeBody() {
        // next_batch = the request's own since: the client asks again from the same point, so
        // no event is skipped; only a real next_batch acknowledges the delivery.
        const targets = svc.store.pendingFor(userId, deviceId).map((p) => p.target);
        svc.metrics?.wakes.inc();
        svc.metrics?.injections.inc({ endpoint: "sync" }, targets.length);
        return JSON.stringify(wakeResponse(since, targets, "sync"));
      },
    };
  }

  return {
    plan(head) {
      const target = head.target;
      const q = target.indexOf("?");
      // An initial sync (no `since`) is never injected into, and has no device_lists.changed.
      if (q === -1) return PLAIN;
      const params = new URLSearchParams(target.slice(q + 1));
      const since = params.get("since");
      if (!since) return PLAIN;
      const token = tokenOf(fieldValue(head, NAME.AUTHORIZATION), target);
      // Without a token that resolves, the homeserver answers as it would (401 and all).
      if (!token) return PLAIN;
      const longPoll = Number(params.get("timeout") ?? 0) > 0;
      const known = svc.auth.cached(token);
      if (known) return known.deviceId ? decide(known, target, since, longPoll) : PLAIN;
      return svc.auth.resolveToken(token).then(
        (who) => (who.deviceId ? decide(who, target, since, longPoll) : PLAIN),
        () => PLAIN,
      );
    },
  };
}

// The homeserver's own device_lists.changed, read as the body streams past: no copy of the
// body is kept, only the small member (DESIGN.md: a user the homeserver reports as changed may
// have a newer list there than our snapshot).
function watchReported(report: (users: string[]) => void): BodyObserver {
  const capture = new TopLevelCapture(["device_lists"]);
  return {
    data: (buf, start, end) => capture.feed(buf, start, end),
    end() {
      const raw = capture.finish()?.get("device_lists");
      if (!raw) return;
      let lists: unknown;
      try {
        lists = JSON.parse(raw.toString("utf8"));
      } catch {
        return;
      }
      const users = reportedChanged({ device_lists: lists }, "sync");
      if (users.length > 0) report(users);
    },
  };
}
