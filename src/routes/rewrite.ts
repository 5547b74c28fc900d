import type { IncomingMessage, ServerResponse } from "node:http";
import type { RouteContext } from "./context.ts";
import { parseJsonObject, readBody } from "../http/body.ts";
import { upstreamTarget } from "../delivery/tokens.ts";
import { homeserverAnswerFailed, sendError } from "../http/reply.ts";
import { pipeResponse, upstreamHeaders } from "../http/passthrough.ts";
import { stripHopByHop } from "../http/upstream.ts";

/**
 * Send the homeserver's answer after `mutate` has changed its JSON body. Anything we cannot
 * safely rewrite (not 200, still compressed, not a JSON object) goes to the client unchanged.
 * Routes that rewrite ask the homeserver for `accept-encoding: identity` up front, so a
 * compressed answer here means the homeserver ignored that and we must not touch it.
 */
export async function sendRewritten(
  up: IncomingMessage,
  res: ServerResponse,
  maxBytes: number,
  mutate: (body: Record<string, unknown>) => void,
): Promise<void> {
  if (up.statusCode !== 200 || up.headers["content-encoding"]) return pipeResponse(up, res);
  const raw = await readBody(up, maxBytes).catch((e: unknown) => Promise.reject(homeserverAnswerFailed(e, maxBytes)));
  const headers = stripHopByHop(up.headers);
  delete headers["content-length"];
  const body = parseJsonObject(raw);
  if (!body) {
    res.writeHead(200, { ...headers, "content-length": String(raw.length) });
    return void res.end(raw);
  }
  mutate(body);
  const out = Buffer.from(JSON.stringify(body));
  res.writeHead(200, { ...headers, "content-length": String(out.length) });
  res.end(out);
}

/** GET the client's own target from the homeserver, uncompressed, and send it rewritten. */
export async function rewriteGet(
  ctx: RouteContext,
  maxBytes: number,
  mutate: (body: Record<string, unknown>) => void,
): Promise<void> {
  const { req, res, deps } = ctx;
  try {
    const up = await deps.upstream.open({
      method: "GET",
      target: upstreamTarget(ctx.target),
      headers: { ...upstreamHeaders(req, ctx.forwarded), "accept-encoding": "identity" },
      headerTimeoutMs: deps.config.upstreamHeaderTimeoutMs,
      clientRes: res,
    });
    await sendRewritten(up, res, maxBytes, mutate);
  } catch (err) {
    if (!res.destroyed) sendError(res, err);
  }
}
