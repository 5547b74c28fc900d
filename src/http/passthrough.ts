import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { Transform } from "node:stream";
import { sendError } from "./reply.ts";
import { stripHopByHop, type Upstream } from "./upstream.ts";

export interface ForwardOptions {
  upstream: Upstream;
  headerTimeoutMs: number;
  forwarded: Record<string, string>;
  /** What to ask the homeserver for: the caller takes off our suffix from any sync position (delivery/tokens.ts). */
  target: string;
}

/** Headers for the homeserver: the client's own, less hop-by-hop ones, plus X-Forwarded-*. */
export function upstreamHeaders(req: IncomingMessage, forwarded: Record<string, string>): OutgoingHttpHeaders {
  return { ...stripHopByHop(req.headers), ...forwarded };
}

/**
 * A long-poll (`/sync?timeout=30000`) sends no headers until the homeserver has something to
 * say, so its header wait must outlast the client's own timeout.
 */
export function headerTimeoutFor(target: string, base: number): number {
  const m = /[?&]timeout=(\d{1,9})(?:&|$)/.exec(target);
  return m ? base + Number(m[1]) : base;
}

export async function passThrough(req: IncomingMessage, res: ServerResponse, o: ForwardOptions): Promise<void> {
  const target = o.target;
  try {
    const hasBody = req.headers["content-length"] !== undefined || req.headers["transfer-encoding"] !== undefined;
    const up = await o.upstream.open({
      method: req.method ?? "GET",
      target,
      headers: upstreamHeaders(req, o.forwarded),
      body: hasBody ? req : undefined,
      headerTimeoutMs: headerTimeoutFor(target, o.headerTimeoutMs),
      clientRes: res,
    });
    pipeResponse(up, res);
  } catch (err) {
    if (!res.destroyed) sendError(res, err);
  }
}

/**
 * Stream the homeserver's response to the client as it arrives, with backpressure, through
 * `rewrite` when given (its output's length is unknown: node frames it chunked, or by close).
 */
export function pipeResponse(up: IncomingMessage, res: ServerResponse, rewrite?: Transform): void {
  const headers = stripHopByHop(up.headers);
  if (rewrite) delete headers["content-length"];
  res.writeHead(up.statusCode ?? 502, up.statusMessage, headers);
  (rewrite ? up.pipe(rewrite) : up).pipe(res);
  // An upstream that dies mid-body must not leave the client waiting for bytes that never come.
  up.on("aborted", () => res.destroy());
  up.on("error", () => res.destroy());
  res.on("close", () => {
    if (!up.complete) up.destroy();
  });
}
