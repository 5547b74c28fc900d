// The operator listener (--metrics-listen): /metrics, /healthz, /readyz and the admin API. Kept
// off the client listener so it is never exposed through the public reverse proxy by accident.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Config } from "../config/config.ts";
import type { KeyCheck } from "../federation/key-check.ts";
import type { Services } from "../routes/context.ts";
import type { ClientPaths } from "../http/client-paths.ts";
import { sendJson } from "../http/reply.ts";
import type { Upstream } from "../http/upstream.ts";
import type { Store } from "../store/store.ts";
import { ADMIN_PREFIX, createAdmin } from "./admin.ts";
import type { Metrics } from "../observe/metrics.ts";
import { checkWhoamiPath } from "../http/whoami-check.ts";

export interface Readiness {
  store: Store;
  upstream: Upstream;
  /** The proxy's shared view of the client API prefix; the whoami check goes through it. */
  paths?: ClientPaths;
  keyCheck: () => KeyCheck | undefined;
  /** True once shutdown began: a load balancer must stop sending new clients here. */
  draining?: () => boolean;
}

export async function readiness(r: Readiness): Promise<{ ready: boolean; checks: Record<string, string> }> {
  const checks: Record<string, string> = {};
  if (r.draining?.()) checks.shutdown = "draining: finishing requests in flight";
  try {
    await r.store.ping();
    checks.store = "ok";
  } catch (e) {
    checks.store = `not writable: ${(e as Error).message}`;
  }
  try {
    const res = await r.upstream.open({
      method: "GET",
      target: "/_matrix/client/versions",
      headers: {},
      headerTimeoutMs: 3000,
    });
    res.resume();
    checks.homeserver = res.statusCode === 200 ? "ok" : `answered ${res.statusCode}`;
  } catch (e) {
    checks.homeserver = `unreachable: ${(e as Error).message}`;
  }
  if (r.paths) {
    const w = await checkWhoamiPath(r.paths, 3000);
    checks.whoami = w.ok ? "ok" : w.detail;
  }
  const k = r.keyCheck();
  checks.signing_key = !k ? "not checked yet" : k.status === "published" ? "ok" : `${k.status}: ${k.detail}`;
  return { ready: Object.values(checks).every((v) => v === "ok"), checks };
}

export interface OpsOptions {
  metrics: Metrics;
  readiness: Readiness;
  services: Services;
  config: Config;
  upstream: Upstream;
  /** Collect counts kept elsewhere first (front-end threads report theirs in batches). */
  beforeScrape?: () => Promise<void>;
}

export function createOpsApp(o: OpsOptions) {
  const admin = createAdmin({ services: o.services, upstream: o.upstream, config: o.config });
  return function ops(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? "/").split("?")[0]!;
    if (path.startsWith(ADMIN_PREFIX)) return void admin(req, res);
    if (path === "/healthz") return sendJson(res, 200, { status: "ok" });
    if (path === "/readyz") {
      void readiness(o.readiness).then((r) => sendJson(res, r.ready ? 200 : 503, r));
      return;
    }
    if (path === "/metrics") {
      void (o.beforeScrape?.() ?? Promise.resolve())
        .then(() => o.metrics.registry.metrics())
        .then((text) => {
          res.writeHead(200, { "content-type": o.metrics.registry.contentType });
          res.end(text);
        });
      return;
    }
    sendJson(res, 404, { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" });
  };
}
