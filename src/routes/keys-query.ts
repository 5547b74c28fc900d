// POST /_matrix/client/{r0,v3}/keys/query: for requested users with a fresh snapshot, the
// answer carries the snapshot instead of the homeserver's stale copy. Parsed only then.
import { overlayAnswer } from "../delivery/keys-splice.ts";
import type { RouteContext } from "./context.ts";
import { accessToken, type Requester, UpstreamAuthError } from "../http/auth.ts";
import { parseJsonObject, readBody } from "../http/body.ts";
import { MatrixError } from "../matrix/errors.ts";
import { sendError } from "../http/reply.ts";
import { corsHeaders } from "../http/cors.ts";
import { passThrough, pipeResponse, upstreamHeaders } from "../http/passthrough.ts";
import { homeserverAnswerFailed } from "../http/reply.ts";
import { stripHopByHop } from "../http/upstream.ts";
import { serverOf } from "../matrix/user-id.ts";
import { learnKeysQuery, learnParsedKeysQuery, watchKeysQuery } from "../resync/self-heal.ts";
import { storeFallback } from "../store/store-guard.ts";
import { upstreamTarget } from "../delivery/tokens.ts";

// The largest body we parse. Parsing is synchronous: a 4 MB query naming 150,000 users holds
// the event loop for 100 ms and more (scripts/bench-tracking.ts), every other client waiting.
// Clients batch their queries far smaller (matrix-rust-sdk sends 250 users at a time). A larger
// body with a Content-Length streams through unread; a chunked one is refused.
const MAX_PARSED = 256 * 1024;
// The largest homeserver answer we overlay; a larger one fails as the homeserver's answer would.
const MAX_ANSWER = 64 * 1024 * 1024;

export async function keysQueryRoute(ctx: RouteContext): Promise<void> {
  const { req, res, deps } = ctx;
  const svc = deps.services;
  // The token first, the body after: a body is memory we hold, and only a caller the
  // homeserver vouches for may make us hold it (docs/operations.md, "Memory").
  const who = await caller(ctx);
  if (who === "answered") return;
  if (who === undefined || Number(req.headers["content-length"]) > MAX_PARSED)
    return passThrough(req, res, {
      upstream: deps.upstream,
      headerTimeoutMs: deps.config.upstreamHeaderTimeoutMs,
      forwarded: ctx.forwarded,
      target: upstreamTarget(req.url ?? "/"),
    });

  const requestBody = await readBody(req, MAX_PARSED, {
    totalMs: deps.config.bodyTimeoutMs,
    minBytesPerSecond: deps.config.bodyMinBytesPerSecond,
  });
  const parsed = parseJsonObject(requestBody);
  const requested = parsed?.device_keys;
  const wanted: Record<string, string[]> = {};
  if (requested && typeof requested === "object" && !Array.isArray(requested))
    for (const [u, ids] of Object.entries(requested))
      wanted[u] = Array.isArray(ids) ? ids.filter((d): d is string => typeof d === "string") : [];

  const remote = Object.keys(wanted).filter((u) => serverOf(u) !== deps.config.serverName);
  // Tracked: the first --max-tracked-per-query of them; the rest are answered, never written.
  const tracked = remote.slice(0, deps.config.maxTrackedPerQuery);
  svc.delivery.trackQuery(who, tracked);
  const snapshots = await storeFallback(() => svc.overlays.servable(remote), new Map());

  const headers = upstreamHeaders(req, ctx.forwarded);
  headers["content-length"] = String(requestBody.length);
  delete headers["transfer-encoding"];
  // The homeserver's answer teaches us its view of the tracked users (resync/self-heal.ts): the
  // views expire with the trackers, so untracked users are not learned.
  const heal = tracked.length ? svc.heal : undefined;
  if (snapshots.size || heal) headers["accept-encoding"] = "identity";
  try {
    const up = await deps.upstream.open({
      method: "POST",
      target: ctx.target,
      headers,
      body: requestBody,
      headerTimeoutMs: deps.config.upstreamHeaderTimeoutMs,
      clientRes: res,
    });
    if (snapshots.size === 0) {
      if (heal) watchKeysQuery(heal, up, who, wanted, tracked);
      return pipeResponse(up, res);
    }
    // Anything we cannot safely rewrite (not 200, still compressed) goes to the client as it
    // came: a compressed answer means the homeserver ignored our accept-encoding.
    if (up.statusCode !== 200 || up.headers["content-encoding"]) return pipeResponse(up, res);
    const raw = await readBody(up, MAX_ANSWER).catch((e: unknown) =>
      Promise.reject(homeserverAnswerFailed(e, MAX_ANSWER)),
    );
    const { body, overlaid, caughtUp, homeserver } = overlayAnswer(raw, wanted, snapshots, heal ? tracked : []);
    const out = stripHopByHop(up.headers);
    out["content-length"] = String(body.length);
    res.writeHead(200, out);
    res.end(body);
    // Learning reads the homeserver's part of the answer: as the overlay parsed it when it parsed
    // all of it, else from the bytes, in the reading thread.
    if (heal && homeserver) learnParsedKeysQuery(heal, who, wanted, tracked, homeserver);
    else if (heal) learnKeysQuery(heal, who, wanted, tracked, [raw]);
    void storeFallback(() => svc.overlays.caughtUp(caughtUp), undefined);
    svc.metrics?.overlaysServed.inc(overlaid.length);
  } catch (e) {
    if (!res.destroyed) sendError(res, e);
  }
}

/**
 * Who is asking, before any of the body is read. No token, or one the homeserver refuses: we
 * answer as the homeserver would and close, the body unread ("answered"). A token we cannot
 * check (the homeserver's whoami failed) or a caller without a device: undefined, the request
 * streams through and the homeserver answers it.
 */
async function caller(ctx: RouteContext): Promise<Requester | "answered" | undefined> {
  const { req, res } = ctx;
  const token = accessToken(req);
  if (!token) {
    sendError(res, new MatrixError("M_MISSING_TOKEN", "Missing access token", { headers: { connection: "close" } }));
    return "answered";
  }
  try {
    const who = await ctx.deps.services.auth.resolveToken(token);
    return who.deviceId ? who : undefined;
  } catch (e) {
    if (!(e instanceof UpstreamAuthError)) return undefined;
    res.writeHead(e.status, {
      ...corsHeaders,
      "content-type": "application/json",
      "content-length": String(e.body.length),
      connection: "close",
    });
    res.end(e.body);
    return "answered";
  }
}
