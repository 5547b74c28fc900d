// GET /_matrix/client/{r0,v3}/sync and simplified sliding sync: put refreshed users into
// device_lists.changed for devices with pending deliveries, and answer a waiting long-poll
// early when a refresh lands. Bodies that need nothing stream through untouched. Sliding sync
// is delivered per connection (conn_id), and only to requests that enable the e2ee extension;
// an answer we add to gets a position of ours, which the next request acknowledges exactly.
import type { IncomingMessage } from "node:http";
import { deviceKey } from "../delivery/waiters.ts";
import type { SyncFlavour } from "../delivery/json/sync-inject.ts";
import {
  answerAtOnce,
  bookInjection,
  holdAfterPlan,
  injectPending,
  planSync,
  reportedWatch,
  safeWakeAnswer,
  spliceStarts,
} from "../delivery/sync-plan.ts";
import type { Handler, RouteContext } from "./context.ts";
import { accessToken, type Requester } from "../http/auth.ts";
import { sendError, sendJson } from "../http/reply.ts";
import { upstreamTarget } from "../delivery/tokens.ts";
import { headerTimeoutFor, passThrough, pipeResponse, upstreamHeaders } from "../http/passthrough.ts";
import { readBody } from "../http/body.ts";
import { bothObservers } from "../delivery/to-device-watch.ts";
import { toDeviceWatch, watchedSplice } from "../resync/self-heal.ts";
import { CLASSIC, decoderFor, pipeSpliced, SLIDING_BODY_MAX, slidingStream, type SyncStream } from "./sync-body.ts";

export function syncRoute(flavour: SyncFlavour): Handler {
  // The position a request resumes from: sync's `since`, sliding sync's `pos`.
  const reqToken = flavour === "sync" ? "since" : "pos";

  return async function sync(ctx: RouteContext): Promise<void> {
    const { req, res, deps, target } = ctx;
    const svc = deps.services;
    const who = await whoIfKnown(ctx);
    if (!who)
      return passThrough(req, res, {
        upstream: deps.upstream,
        headerTimeoutMs: deps.config.upstreamHeaderTimeoutMs,
        forwarded: ctx.forwarded,
        target: upstreamTarget(req.url ?? "/"),
      });

    // Sliding sync: which connection, and did it ask for the e2ee extension (MSC3884)? Only a
    // request that did gets anything from us; another connection of the same device (Element
    // X's "room-list") is left exactly as the homeserver answers it.
    let body: Buffer | undefined;
    let stream: SyncStream = CLASSIC;
    if (flavour === "sliding") {
      try {
        // The same limits as every body we read: an oversized one is 413, a slow one 408.
        body = await readBody(req, SLIDING_BODY_MAX, {
          totalMs: deps.config.bodyTimeoutMs,
          minBytesPerSecond: deps.config.bodyMinBytesPerSecond,
        });
      } catch (e) {
        if (!res.destroyed) sendError(res, e);
        return;
      }
      stream = slidingStream(body);
    }
    const conn = stream.conn;

    const q = new URLSearchParams(target.includes("?") ? target.slice(target.indexOf("?") + 1) : "");
    const since = q.get(reqToken) ?? "";
    const longPoll = since !== "" && Number(q.get("timeout") ?? 0) > 0;
    // A failing store: nothing is acknowledged, injected or held for a wake, and the request
    // goes through plain (docs/operations.md, "When the store fails").
    const plan = await planSync(svc, {
      userId: who.userId,
      deviceId: who.deviceId,
      since,
      conn,
      asked: stream.asked,
      longPoll,
    });
    // At the position the client asked from: the next request acknowledges exactly this answer.
    if (plan.answerHere) return sendJson(res, 200, await safeWakeAnswer(svc, who, since, flavour, conn));
    const inject = plan.inject;
    if (inject) spliceStarts(svc, who, conn);
    // Detection reads the to-device events of every body (resync/detect.ts), after it has gone out.
    const toDevice = toDeviceWatch(svc.heal, who, flavour);
    const observe = svc.overlays.active || toDevice !== undefined;

    const abort = new AbortController();
    let woken = false;
    const key = deviceKey(who.userId, who.deviceId);
    const waiter = {
      wake() {
        woken = true;
        abort.abort();
      },
    };
    if (plan.hold) {
      svc.delivery.waiters.add(key, waiter);
      holdAfterPlan(svc, who, plan, () => waiter.wake(), conn);
    }
    const unwait = () => svc.delivery.waiters.remove(key, waiter);
    const answerWake = async () => sendJson(res, 200, await safeWakeAnswer(svc, who, since, flavour, conn));

    // With news to deliver, do not let the homeserver hold the poll for its whole timeout
    // (it has nothing new, so it would): ask it to answer at once, which carries the injection
    // now under a position of ours (tokens.ts) that the next request acknowledges exactly. Our
    // only changes to a forwarded target: that `timeout`, and our suffix off its positions.
    const own = upstreamTarget(target);
    const upstreamTo = inject ? answerAtOnce(own) : own;
    const headers = upstreamHeaders(req, ctx.forwarded);
    // We may have to read the body: ask for it uncompressed (and inflate it if it comes anyway).
    if (inject || observe) headers["accept-encoding"] = "identity";
    if (body) {
      delete headers["transfer-encoding"];
      headers["content-length"] = String(body.length);
    }
    // The answer's suffix is booked while the homeserver answers, and committed before any of
    // the answer goes out (sync-plan.ts bookInjection).
    const booking = inject ? bookInjection(svc, who, plan.targets, conn) : undefined;
    // Not awaited when the homeserver fails to answer: never an unhandled rejection then.
    booking?.catch(() => {});
    let up: IncomingMessage;
    try {
      up = await deps.upstream.open({
        method: req.method ?? "GET",
        target: upstreamTo,
        headers,
        body:
          body ??
          (req.headers["content-length"] !== undefined || req.headers["transfer-encoding"] !== undefined
            ? req
            : undefined),
        headerTimeoutMs: headerTimeoutFor(upstreamTo, deps.config.upstreamHeaderTimeoutMs),
        clientRes: res,
        signal: abort.signal,
      });
    } catch (e) {
      unwait();
      if (woken && !res.destroyed) return answerWake();
      if (!res.destroyed) sendError(res, e);
      return;
    } finally {
      unwait();
    }
    const encoding = up.headers["content-encoding"];
    const readable = up.statusCode === 200 && !encoding;
    if (booking) {
      const decoder = up.statusCode === 200 ? decoderFor(encoding) : undefined;
      if (!readable && !decoder) return pipeResponse(up, res);
      // The answer waits, unread, for its booking (already done, unless the store is slow).
      up.on("error", () => res.destroy());
      const mark = await booking;
      if (res.destroyed) return void up.destroy();
      // A failing store: the answer goes through as the homeserver gave it, nothing injected.
      if (mark === undefined) return pipeResponse(up, res);
      return pipeSpliced(
        up,
        res,
        watchedSplice(injectPending(svc, who, plan.targets, flavour, mark, conn), toDevice),
        decoder,
      );
    }
    if (!readable || !observe) return pipeResponse(up, res);
    const reported = svc.overlays.active ? reportedWatch(svc, flavour) : undefined;
    const watch = bothObservers(reported, toDevice)!;
    up.on("data", (c: Buffer) => watch.data(c, 0, c.length));
    up.on("end", () => watch.end());
    return pipeResponse(up, res);
  };
}

/** The caller, when their token resolves; otherwise the homeserver answers as it would. */
export async function whoIfKnown(ctx: RouteContext): Promise<Requester | undefined> {
  const token = accessToken(ctx.req);
  if (!token) return undefined;
  try {
    const who = await ctx.deps.services.auth.resolveToken(token);
    return who.deviceId ? who : undefined;
  } catch {
    return undefined;
  }
}
