import type { IncomingMessage, ServerResponse } from "node:http";
import type { Config } from "../config/config.ts";
import type { Delivery } from "../delivery/delivery.ts";
import type { Overlays } from "../delivery/overlays.ts";
import type { Auth } from "../http/auth.ts";
import type { Match, Router } from "../http/router.ts";
import type { Upstream } from "../http/upstream.ts";
import type { Logger } from "../observe/log.ts";
import type { Metrics } from "../observe/metrics.ts";
import type { SelfHeal } from "../resync/self-heal.ts";
import type { Resyncer } from "../resync/resyncer.ts";
import type { Store } from "../store/store.ts";

// What a handler gets, and the one rule of which requests the proxy answers itself (both
// engines ask `intercept`; everything else streams to the homeserver).
export interface AppDeps {
  config: Config;
  upstream: Upstream;
  trusted: (ip: string) => boolean;
  services: Services;
  /** The Bun front end's per-process secret (engine/bun/): requests bearing it name their real client. */
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
  /** The homeserver's view, heals, detection and the audit (resync/self-heal.ts). */
  heal?: SelfHeal;
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
 * The one definition of "intercepted", shared by the node:http app (engine/node/app.ts) and the
 * Bun front end, which sends exactly these requests to the app and streams every other one to
 * the homeserver.
 */
export function intercept(routes: Router<Handler>, method: string, path: string): Interception | undefined {
  if (path === SELF_HEALTH_PATH) return { kind: "health" };
  if (method === "OPTIONS" && routes.has(path)) return { kind: "preflight" };
  const hit = routes.match(method, path);
  return hit ? { kind: "route", hit } : undefined;
}
