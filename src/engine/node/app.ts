import { timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { isIP } from "node:net";
import type { Config } from "../../config/config.ts";
import type { Delivery } from "../../delivery/delivery.ts";
import type { Overlays } from "../../delivery/overlays.ts";
import type { Logger } from "../../observe/log.ts";
import type { Metrics } from "../../observe/metrics.ts";
import type { Resyncer } from "../../resync/resyncer.ts";
import type { Store } from "../../store/store.ts";
import type { Auth } from "../../http/auth.ts";
import { sendError, sendJson } from "../../matrix/errors.ts";
import { sendPreflight } from "../../http/cors.ts";
import { admitPeer, forwardedHeaders } from "../../http/forwarded.ts";
import { passThrough } from "../../http/passthrough.ts";
import { requestLog } from "../../http/request-log.ts";
import type { Listener } from "../../http/listen.ts";
import { type Match, Router } from "../../http/router.ts";
import type { Upstream } from "../../http/upstream.ts";

export interface AppDeps {
  config: Config;
  upstream: Upstream;
  trusted: (ip: string) => boolean;
  services: Services;
  /** The Bun front end's per-process secret (server/front/): requests bearing it name their real client. */
  frontSecret?: string;
}

/** The stateful parts intercepted routes use. */
export interface Services {
  auth: Auth;
  resyncer: Resyncer;
  delivery: Delivery;
  overlays: Overlays;
  store: Store;
  metrics?: Metrics;
  log: Logger;
}

export interface RouteContext {
  req: IncomingMessage;
  res: ServerResponse;
  params: Record<string, string>;
  /** Raw path and query exactly as the client sent them. */
  target: string;
  forwarded: Record<string, string>;
  deps: AppDeps;
}

export type Handler = (ctx: RouteContext) => Promise<void>;

// The proxy's own liveness path on the client listener, for `healthcheck` when no metrics
// listener is configured. The `/_resync/` prefix is ours: no homeserver serves it.
export const SELF_HEALTH_PATH = "/_resync/healthz";

/** What the proxy does itself with a request; undefined: it streams through to the homeserver. */
export type Interception = { kind: "health" } | { kind: "preflight" } | { kind: "route"; hit: Match<Handler> };

/**
 * The one definition of "intercepted", shared by the app below and the Bun front end, which
 * sends exactly these requests to the app and streams every other one to the homeserver.
 */
export function intercept(routes: Router<Handler>, method: string, path: string): Interception | undefined {
  if (path === SELF_HEALTH_PATH) return { kind: "health" };
  if (method === "OPTIONS" && routes.has(path)) return { kind: "preflight" };
  const hit = routes.match(method, path);
  return hit ? { kind: "route", hit } : undefined;
}

// Headers by which the front end names the real client of a request it relays to the app.
export const FRONT_PEER_HEADER = "x-resync-peer";
export const FRONT_SECRET_HEADER = "x-resync-front";

/**
 * Believe the front end's peer header only with the per-process secret, so no client can pick
 * its own address (and with it X-Forwarded-For trust, rate-limit identity and log lines). Both
 * headers are removed here, whoever sent them, so they never travel upstream.
 */
function admitFront(secret: string | undefined, next: Listener): Listener {
  const expected = secret === undefined ? undefined : Buffer.from(secret);
  return function fromFront(req, res) {
    const peer = req.headers[FRONT_PEER_HEADER];
    const token = req.headers[FRONT_SECRET_HEADER];
    if (peer !== undefined || token !== undefined) {
      delete req.headers[FRONT_PEER_HEADER];
      delete req.headers[FRONT_SECRET_HEADER];
      const given = typeof token === "string" ? Buffer.from(token) : undefined;
      const genuine = expected !== undefined && given !== undefined && given.length === expected.length && timingSafeEqual(given, expected);
      if (genuine && typeof peer === "string" && isIP(peer)) admitPeer(req, peer);
    }
    next(req, res);
  };
}

/** Returns the request listener: intercepted routes go to their handler, everything else streams through. */
export function createApp(deps: AppDeps, routes: Router<Handler>): (req: IncomingMessage, res: ServerResponse) => void {
  const logged = requestLog({ log: deps.services.log, metrics: deps.services.metrics, trusted: deps.trusted });
  return admitFront(deps.frontSecret, logged(function handle(req, res) {
    const target = req.url ?? "/";
    const q = target.indexOf("?");
    const path = q === -1 ? target : target.slice(0, q);
    const method = req.method ?? "GET";
    const forwarded = forwardedHeaders(req, deps.trusted);

    const what = intercept(routes, method, path);
    if (what === undefined) {
      void passThrough(req, res, { upstream: deps.upstream, headerTimeoutMs: deps.config.upstreamHeaderTimeoutMs, forwarded });
      return;
    }
    if (what.kind === "health") return sendJson(res, 200, { status: "ok" });
    if (what.kind === "preflight") return sendPreflight(res);
    const hit = what.hit;
    hit.handler({ req, res, params: hit.params, target, forwarded, deps }).catch((err) => {
      if (!res.destroyed) sendError(res, err);
    });
  }));
}
