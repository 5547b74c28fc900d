// Where a parsed request goes: to the app when app.ts would intercept it, else to the
// homeserver; with its request id, its head for that hop, and (pass-through only) its log line
// and metrics, which the app writes itself for the requests it serves.
import type { AccessLog } from "./access-log.ts";
import type { ClientConn } from "./client.ts";
import { Exchange } from "./exchange.ts";
import type { Body } from "./framing.ts";
import { clientKeepsAlive, fieldNamed, fieldValue, type RequestHead } from "./head.ts";
import type { Hop } from "./hop.ts";
import { NAME } from "./names.ts";

export interface FrontContext {
  homeserver: Hop;
  app: Hop;
  /** app.ts `intercept`: is this request the app's? */
  intercepts(method: string, path: string): boolean;
  access: AccessLog;
  /** Keep-alive idle limit between requests, seconds (Bun's socket timers tick every few). */
  idleSeconds: number;
  draining: boolean;
  forget(c: ClientConn): void;
}

/**
 * The exchange for one request whose head is buf[…, bodyStart); its body's bytes already in
 * buf go with the head in one write. `bodyEnd`: where this request's bytes end in buf (later
 * bytes are the next, pipelined, request). Throws HeadError on broken chunked framing.
 */
export function dispatch(ctx: FrontContext, client: ClientConn, head: RequestHead, body: Body, buf: Buffer, bodyStart: number): { exchange: Exchange; bodyEnd: number } {
  const { method, target } = head;
  const peer = client.peer;
  const q = target.indexOf("?");
  const intercepted = ctx.intercepts(method, q === -1 ? target : target.slice(0, q));
  const hop = intercepted ? ctx.app : ctx.homeserver;
  const stop = body.feed(buf, bodyStart, buf.length);
  const bodyEnd = stop === -1 ? buf.length : stop;
  const started = performance.now();
  const access = ctx.access;
  // The app applies request-log.ts's X-Request-Id rule itself; this id is only for an error
  // the front end answers in its place.
  const requestId = access.requestId(intercepted ? undefined : fieldValue(head, NAME.X_REQUEST_ID), peer);
  const reqHead = hop.requestHead(head, { peer, requestId, chunked: body.kind === "chunked" });
  const first = bodyEnd > bodyStart ? Buffer.concat([reqHead, buf.subarray(bodyStart, bodyEnd)]) : reqHead;
  // Every route class but "passthrough" names an intercepted route (request-log.ts).
  const route = intercepted ? undefined : "passthrough";
  const exchange = new Exchange({
    hop, client, method, target, minor: head.minor, body, first, requestId,
    keepAlive: clientKeepsAlive(head) && !ctx.draining,
    onHead: route && (() => access.upstreamLatency(route, (performance.now() - started) / 1000)),
    onEnd: (status, aborted) => {
      if (route) access.finished({ id: requestId, route, method, target, peer, header: (n) => fieldNamed(head, n), started, status, aborted });
    },
  });
  return { exchange, bodyEnd };
}
