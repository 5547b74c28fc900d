// GET /_matrix/client/{r0,v3}/sync and simplified sliding sync: put refreshed users into
// device_lists.changed for devices with pending deliveries, and answer a waiting long-poll
// early when a refresh lands. Bodies that need nothing stream through untouched.
import type { IncomingMessage } from "node:http";
import { deviceKey } from "../delivery/waiters.ts";
import { type SyncFlavour, wakeResponse } from "../delivery/sync-inject.ts";
import { reportedInRaw, spliceChanged } from "../delivery/sync-splice.ts";
import type { Handler, RouteContext, Services } from "../server/app.ts";
import { accessToken, type Requester } from "../server/auth.ts";
import { readBody } from "../server/body.ts";
import { sendError, sendJson } from "../server/errors.ts";
import { headerTimeoutFor, passThrough, pipeResponse, upstreamHeaders } from "../server/passthrough.ts";
import { stripHopByHop } from "../server/upstream.ts";

const MAX_SYNC_BODY = 256 * 1024 * 1024; // an initial sync of a huge account can be this big

export function syncRoute(flavour: SyncFlavour): Handler {
  // The token that acknowledges a response: sync's `since`/`next_batch`, sliding sync's `pos`.
  const [reqToken, resToken] = flavour === "sync" ? ["since", "next_batch"] : ["pos", "pos"];

  return async function sync(ctx: RouteContext): Promise<void> {
    const { req, res, deps, target } = ctx;
    const svc = deps.services;
    const who = await whoIfKnown(ctx);
    if (!who) return passThrough(req, res, { upstream: deps.upstream, headerTimeoutMs: deps.config.upstreamHeaderTimeoutMs, forwarded: ctx.forwarded });

    const q = new URLSearchParams(target.includes("?") ? target.slice(target.indexOf("?") + 1) : "");
    const since = q.get(reqToken) ?? "";
    const longPoll = since !== "" && Number(q.get("timeout") ?? 0) > 0;
    if (since) svc.store.ackToken(who.userId, who.deviceId, since);
    const inject = since !== "" && svc.store.hasPending(who.userId, who.deviceId);
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
    if (!inject) return pipeAndObserve(up, res, (raw) => svc.overlays.homeserverReported(reportedInRaw(raw, flavour)));

    const out = injectPending(svc, who, await readBody(up, MAX_SYNC_BODY), flavour);
    res.writeHead(200, { ...stripHopByHop(up.headers), "content-length": String(out.length) });
    res.end(out);
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
 * The body to send for a sync response with deliveries pending for the requester: the pending
 * users spliced into device_lists.changed, each marked as carried by this response's token.
 */
export function injectPending(svc: Services, who: Requester, raw: Buffer, flavour: SyncFlavour): Buffer {
  const targets = svc.store.pendingFor(who.userId, who.deviceId).map((p) => p.target);
  const spliced = spliceChanged(raw, targets, flavour);
  if (!spliced) return raw;
  svc.overlays.homeserverReported(spliced.reported);
  // Users the homeserver lists in `left` are skipped but marked too: the client no longer tracks them.
  if (spliced.token !== undefined) svc.store.markCarried(who.userId, who.deviceId, targets, spliced.token);
  svc.metrics?.injections.inc({ endpoint: flavour }, spliced.added.length);
  return spliced.body;
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

// Stream to the client as usual, keeping a bounded copy to read the homeserver's own
// device_lists.changed afterwards: overlay bookkeeping must not cost the client latency.
function pipeAndObserve(up: IncomingMessage, res: RouteContext["res"], onBody: (raw: Buffer) => void): void {
  const chunks: Buffer[] = [];
  let size = 0;
  up.on("data", (c: Buffer) => {
    size += c.length;
    if (size <= 64 * 1024 * 1024) chunks.push(c);
  });
  up.on("end", () => {
    if (size <= 64 * 1024 * 1024) onBody(Buffer.concat(chunks));
  });
  pipeResponse(up, res);
}
