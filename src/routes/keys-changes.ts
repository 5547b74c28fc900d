// GET /_matrix/client/{r0,v3}/keys/changes?from=&to=: after a restart clients catch up here,
// so pending deliveries appear in `changed` too. Nothing is acknowledged: /sync does that.
import { keysChangesInject } from "../delivery/sync-inject.ts";
import type { RouteContext } from "../server/app.ts";
import { parseJsonObject, readBody } from "../server/body.ts";
import { sendError } from "../server/errors.ts";
import { passThrough, pipeResponse, upstreamHeaders } from "../server/passthrough.ts";
import { stripHopByHop } from "../server/upstream.ts";
import { whoIfKnown } from "./sync.ts";

export async function keysChangesRoute(ctx: RouteContext): Promise<void> {
  const { req, res, deps } = ctx;
  const svc = deps.services;
  const who = await whoIfKnown(ctx);
  const pending = who ? svc.store.pendingFor(who.userId, who.deviceId).map((p) => p.target) : [];
  if (pending.length === 0) return passThrough(req, res, { upstream: deps.upstream, headerTimeoutMs: deps.config.upstreamHeaderTimeoutMs, forwarded: ctx.forwarded });
  try {
    const up = await deps.upstream.open({
      method: "GET",
      target: ctx.target,
      headers: { ...upstreamHeaders(req, ctx.forwarded), "accept-encoding": "identity" },
      headerTimeoutMs: deps.config.upstreamHeaderTimeoutMs,
      clientRes: res,
    });
    if (up.statusCode !== 200 || up.headers["content-encoding"]) return pipeResponse(up, res);
    const body = parseJsonObject(await readBody(up, 16 * 1024 * 1024));
    if (!body) return sendError(res, new Error("homeserver answered /keys/changes with non-JSON"));
    const added = keysChangesInject(body, pending);
    svc.metrics?.injections.inc({ endpoint: "keys_changes" }, added.length);
    const out = Buffer.from(JSON.stringify(body));
    const headers = stripHopByHop(up.headers);
    res.writeHead(200, { ...headers, "content-length": String(out.length) });
    res.end(out);
  } catch (e) {
    if (!res.destroyed) sendError(res, e);
  }
}
