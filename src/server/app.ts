import type { IncomingMessage, ServerResponse } from "node:http";
import type { Config } from "../config.ts";
import type { Delivery } from "../delivery/delivery.ts";
import type { Overlays } from "../delivery/overlays.ts";
import type { Logger } from "../ops/log.ts";
import type { Metrics } from "../ops/metrics.ts";
import type { Resyncer } from "../resync/resyncer.ts";
import type { Store } from "../store/store.ts";
import type { Auth } from "./auth.ts";
import { sendError, sendJson } from "./errors.ts";
import { sendPreflight } from "./cors.ts";
import { forwardedHeaders } from "./forwarded.ts";
import { passThrough } from "./passthrough.ts";
import { requestLog } from "./request-log.ts";
import { Router } from "./router.ts";
import type { Upstream } from "./upstream.ts";

export interface AppDeps {
  config: Config;
  upstream: Upstream;
  trusted: (ip: string) => boolean;
  services: Services;
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

/** Returns the request listener: intercepted routes go to their handler, everything else streams through. */
export function createApp(deps: AppDeps, routes: Router<Handler>): (req: IncomingMessage, res: ServerResponse) => void {
  const logged = requestLog({ log: deps.services.log, metrics: deps.services.metrics, trusted: deps.trusted });
  return logged(function handle(req, res) {
    const target = req.url ?? "/";
    const q = target.indexOf("?");
    const path = q === -1 ? target : target.slice(0, q);
    const method = req.method ?? "GET";
    const forwarded = forwardedHeaders(req, deps.trusted);

    if (path === SELF_HEALTH_PATH) return sendJson(res, 200, { status: "ok" });
    if (method === "OPTIONS" && routes.has(path)) return sendPreflight(res);
    const hit = routes.match(method, path);
    if (!hit) {
      void passThrough(req, res, { upstream: deps.upstream, headerTimeoutMs: deps.config.upstreamHeaderTimeoutMs, forwarded });
      return;
    }
    hit.handler({ req, res, params: hit.params, target, forwarded, deps }).catch((err) => {
      if (!res.destroyed) sendError(res, err);
    });
  });
}
