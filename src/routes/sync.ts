// GET /_matrix/client/{r0,v3}/sync and simplified sliding sync: put refreshed users into
// device_lists.changed for devices with pending deliveries, and answer a waiting long-poll
// early when a refresh lands. Bodies that need nothing stream through untouched.
import type { IncomingMessage } from "node:http";
import { Transform } from "node:stream";
import { deviceKey } from "../delivery/waiters.ts";
import { type SyncFlavour, wakeResponse } from "../delivery/sync-inject.ts";
import { type BodySplice, ReportedWatch, SyncSplice } from "../delivery/sync-splice.ts";
import type { Handler, RouteContext, Services } from "../server/app.ts";
import { accessToken, type Requester } from "../server/auth.ts";
import { sendError, sendJson } from "../server/errors.ts";
import { headerTimeoutFor, passThrough, pipeResponse, upstreamHeaders } from "../server/passthrough.ts";
import { storeFallback } from "../store/store-guard.ts";

export function syncRoute(flavour: SyncFlavour): Handler {
  // The position a request resumes from: sync's `since`, sliding sync's `pos`.
  const reqToken = flavour === "sync" ? "since" : "pos";

  return async function sync(ctx: RouteContext): Promise<void> {
    const { req, res, deps, target } = ctx;
    const svc = deps.services;
    const who = await whoIfKnown(ctx);
    if (!who) return passThrough(req, res, { upstream: deps.upstream, headerTimeoutMs: deps.config.upstreamHeaderTimeoutMs, forwarded: ctx.forwarded });

    const q = new URLSearchParams(target.includes("?") ? target.slice(target.indexOf("?") + 1) : "");
    const since = q.get(reqToken) ?? "";
    const longPoll = since !== "" && Number(q.get("timeout") ?? 0) > 0;
    // A failing store: the request goes through plain (docs/operations.md, "When the store fails").
    const inject = storeFallback(() => {
      if (since) svc.store.ackToken(who.userId, who.deviceId, since);
      return since !== "" && svc.store.hasPending(who.userId, who.deviceId);
    }, undefined);
    if (inject === undefined) return passThrough(req, res, { upstream: deps.upstream, headerTimeoutMs: deps.config.upstreamHeaderTimeoutMs, forwarded: ctx.forwarded });
    const observe = svc.overlays.active;

    const abort = new AbortController();
    let woken = false;
    const key = deviceKey(who.userId, who.deviceId);
    const waiter = {
      wake() {
        woken = true;
        abort.abort();
      },
    };
    if (longPoll && !inject) svc.delivery.waiters.add(key, waiter);
    const unwait = () => svc.delivery.waiters.remove(key, waiter);
    const answerWake = () => sendJson(res, 200, wakeAnswer(svc, who, since, flavour));

    // With news to deliver, do not let the homeserver hold the poll for its whole timeout
    // (it has nothing new, so it would): ask it to answer at once with a real next_batch,
    // which both carries the injection now and acknowledges it on the next request. The only
    // change we ever make to a forwarded target, and only to the `timeout` parameter.
    const upstreamTarget = inject ? answerAtOnce(target) : target;
    const headers = upstreamHeaders(req, ctx.forwarded);
    // We may have to read the body: ask for it uncompressed rather than inflate it ourselves.
    if (inject || observe) headers["accept-encoding"] = "identity";
    let up: IncomingMessage;
    try {
      up = await deps.upstream.open({
        method: req.method ?? "GET",
        target: upstreamTarget,
        headers,
        body: req.headers["content-length"] !== undefined || req.headers["transfer-encoding"] !== undefined ? req : undefined,
        headerTimeoutMs: headerTimeoutFor(upstreamTarget, deps.config.upstreamHeaderTimeoutMs),
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
    const readable = up.statusCode === 200 && !up.headers["content-encoding"];
    if (!readable || (!inject && !observe)) return pipeResponse(up, res);
    if (!inject) {
      const watch = new ReportedWatch((users) => svc.overlays.homeserverReported(users), flavour);
      up.on("data", (c: Buffer) => watch.data(c, 0, c.length));
      up.on("end", () => watch.end());
      return pipeResponse(up, res);
    }
    const splice = injectPending(svc, who, flavour);
    const spliced = new Transform({
      transform(chunk: Buffer, _enc, next) {
        splice.feed(chunk, 0, chunk.length, (b, s, e) => this.push(b.subarray(s, e)));
        next();
      },
      flush(next) {
        splice.end((b, s, e) => this.push(b.subarray(s, e)));
        next();
        splice.settle();
      },
    });
    pipeResponse(up, res, spliced);
  };
}

/** The target with `timeout=0`: the only change we ever make to a forwarded target. */
export function answerAtOnce(target: string): string {
  return target.replace(/([?&])timeout=\d+/, "$1timeout=0");
}

/** The answer that ends a waiting long-poll early, carrying every pending user (DESIGN.md "early wake"). */
export function wakeAnswer(svc: Services, who: { userId: string; deviceId: string }, since: string, flavour: SyncFlavour): Record<string, unknown> {
  // next_batch = the request's own since: the client asks again from the same point, so no
  // event is skipped. No token is marked: only a real next_batch acknowledges the delivery.
  const targets = svc.store.pendingFor(who.userId, who.deviceId).map((p) => p.target);
  svc.metrics?.wakes.inc();
  svc.metrics?.injections.inc({ endpoint: flavour }, targets.length);
  return wakeResponse(since, targets, flavour);
}

/**
 * A sync response body with deliveries pending for the requester: the pending users spliced
 * into device_lists.changed as it streams, each marked as carried by the response's token once
 * the whole body has gone through (the client can only ask with that token after it has).
 */
export function injectPending(svc: Services, who: Requester, flavour: SyncFlavour): BodySplice {
  const targets = svc.store.pendingFor(who.userId, who.deviceId).map((p) => p.target);
  return new SyncSplice(targets, flavour, (spliced) => {
    svc.overlays.homeserverReported(spliced.reported);
    // Users the homeserver lists in `left` are skipped but marked too: the client no longer tracks them.
    // Unmarked on a failing store: the rows stay pending and the next poll carries them again.
    if (spliced.token !== undefined) storeFallback(() => svc.store.markCarried(who.userId, who.deviceId, targets, spliced.token!), undefined);
    svc.metrics?.injections.inc({ endpoint: flavour }, spliced.added.length);
  });
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
