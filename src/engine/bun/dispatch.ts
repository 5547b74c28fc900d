// Where a parsed request goes: to the app when `intercept` (routes/context.ts) says it is the app's, else to the
// homeserver; with its request id, its head for that hop, and (pass-through only) its log line
// and metrics, which the app writes itself for the requests it serves.
import type { RouteClass } from "../../http/request-log.ts";
import type { AccessLog, Finished } from "./access-log.ts";
import type { ClientConn } from "./client.ts";
import { Exchange, type ExchangeRecord } from "./exchange.ts";
import type { Body } from "./framing.ts";
import { clientKeepsAlive, fieldValue, type RequestHead } from "./head.ts";
import type { Hop } from "./hop.ts";
import { NAME } from "./names.ts";
import type { SyncGate, SyncPlan, SyncRoute } from "./sync-gate.ts";

export interface FrontContext {
  homeserver: Hop;
  app: Hop;
  /** routes/context.ts `intercept`: is this request the app's? "sync": GET /sync, which the gate routes. */
  intercepts(method: string, path: string): boolean | "sync";
  /** Decides each GET /sync (sync-gate.ts); without it the app serves them all. */
  syncGate?: SyncGate;
  access: AccessLog;
  /** Keep-alive idle limit between requests, seconds (Bun's socket timers tick every few). */
  idleSeconds: number;
  draining: boolean;
  forget(c: ClientConn): void;
}

/** Where a request goes: the app, or the homeserver (with what we do alongside, for /sync). */
export type Route = { app: true } | { app: false; sync?: SyncPlan };

const TO_APP: Route = { app: true };
const TO_HOMESERVER: Route = { app: false };

/** The route of a parsed request; a /sync may take a token lookup (a promise) to decide. */
export function routeOf(ctx: FrontContext, head: RequestHead, body: Body): Route | Promise<Route> {
  const target = head.target;
  const q = target.indexOf("?");
  const what = ctx.intercepts(head.method, q === -1 ? target : target.slice(0, q));
  if (what !== "sync") return what ? TO_APP : TO_HOMESERVER;
  // A /sync with a body is not one a client sends: the app handles the odd case.
  if (!ctx.syncGate || body.kind !== "none") return TO_APP;
  const plan = ctx.syncGate.plan(head);
  return plan instanceof Promise ? plan.then(toRoute) : toRoute(plan);
}

const toRoute = (sync: SyncRoute): Route => (sync === "app" ? TO_APP : { app: false, sync });

/**
 * The exchange for one request whose head is buf[…, bodyStart); its body's bytes already in
 * buf go with the head in one write. `bodyEnd`: where this request's bytes end in buf (later
 * bytes are the next, pipelined, request). Throws HeadError on broken chunked framing.
 */
export function dispatch(
  ctx: FrontContext,
  client: ClientConn,
  head: RequestHead,
  body: Body,
  buf: Buffer,
  bodyStart: number,
  to: Route,
): { exchange: Exchange; bodyEnd: number } {
  const { method, target } = head;
  const peer = client.peer;
  const intercepted = to.app;
  const sync = to.app ? undefined : to.sync;
  const hop = intercepted ? ctx.app : ctx.homeserver;
  const stop = body.feed(buf, bodyStart, buf.length);
  const bodyEnd = stop === -1 ? buf.length : stop;
  const access = ctx.access;
  // The app applies http/request-log.ts's X-Request-Id rule itself; this id is only for an error
  // the front end answers in its place.
  const requestId = access.requestId(intercepted ? undefined : fieldValue(head, NAME.X_REQUEST_ID), peer);
  // Its reader is made when the response head arrives: a held long-poll carries none.
  const observe = sync?.observes ? sync : undefined;
  const reqHead = hop.requestHead(head, {
    peer,
    requestId,
    chunked: body.kind === "chunked",
    identity: observe !== undefined || sync?.inject !== undefined,
    target: sync?.inject?.target,
  });
  const first = bodyEnd > bodyStart ? Buffer.concat([reqHead, buf.subarray(bodyStart, bodyEnd)]) : reqHead;
  // The app logs what it serves; the front end logs the rest, /sync under its own class.
  const route = intercepted ? undefined : sync ? "sync" : "passthrough";
  const keepAlive = clientKeepsAlive(head) && !ctx.draining;
  const exchange = new Exchange({
    hop,
    client,
    method,
    target,
    minor: head.minor,
    body,
    first,
    requestId,
    keepAlive,
    observe,
    splice: sync?.inject?.splice,
    longPoll: sync?.longPoll,
    record: route && new Logged(access, route, head, requestId, peer),
  });
  return { exchange, bodyEnd };
}

// A request's log line and metrics, for the requests the front end serves itself: the record
// the access log reads at the end. Fields, not closures: a held long-poll keeps this for
// minutes, and two closures and their scope cost more. Every field is set in the constructor:
// initialisers and a private field made JavaScriptCore run a second function per object,
// which cost as much again as the object (docs/performance.md, eighth session).
class Logged implements ExchangeRecord, Finished {
  readonly id: string;
  readonly route: RouteClass;
  readonly method: string;
  readonly target: string;
  readonly peer: string;
  // Read now, so the line at the end needs no reference to the head: a held long-poll would
  // otherwise keep the whole request head alive for its minutes.
  readonly forwardedFor: string | undefined;
  readonly started: number;
  status: number | undefined;
  aborted: boolean;
  readonly access: AccessLog;

  constructor(access: AccessLog, route: RouteClass, head: RequestHead, id: string, peer: string) {
    this.access = access;
    this.route = route;
    this.method = head.method;
    this.target = head.target;
    this.id = id;
    this.peer = peer;
    this.forwardedFor = fieldValue(head, NAME.X_FORWARDED_FOR);
    this.started = performance.now();
    this.status = undefined;
    this.aborted = false;
  }

  head(): void {
    this.access.upstreamLatency(this.route, (performance.now() - this.started) / 1000);
  }

  end(status: number | undefined, aborted: boolean): void {
    this.status = status;
    this.aborted = aborted;
    this.access.finished(this);
  }
}
