import { timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { isIP } from "node:net";
import { sendPreflight } from "../../http/cors.ts";
import { admitPeer, FRONT_PEER_HEADER, FRONT_SECRET_HEADER, forwardedHeaders } from "../../http/forwarded.ts";
import type { Listener } from "../../http/listen.ts";
import { passThrough } from "../../http/passthrough.ts";
import { sendError, sendJson } from "../../http/reply.ts";
import { requestLog } from "../../http/request-log.ts";
import type { Router } from "../../http/router.ts";
import { type AppDeps, type Handler, intercept } from "../../routes/context.ts";
import { upstreamTarget } from "../../delivery/tokens.ts";

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
      const genuine =
        expected !== undefined &&
        given !== undefined &&
        given.length === expected.length &&
        timingSafeEqual(given, expected);
      if (genuine && typeof peer === "string" && isIP(peer)) admitPeer(req, peer);
    }
    next(req, res);
  };
}

/** Returns the request listener: intercepted routes go to their handler, everything else streams through. */
export function createApp(deps: AppDeps, routes: Router<Handler>): (req: IncomingMessage, res: ServerResponse) => void {
  const logged = requestLog({ log: deps.services.log, metrics: deps.services.metrics, trusted: deps.trusted });
  return admitFront(
    deps.frontSecret,
    logged(function handle(req, res) {
      const target = req.url ?? "/";
      const q = target.indexOf("?");
      const path = q === -1 ? target : target.slice(0, q);
      const method = req.method ?? "GET";
      const forwarded = forwardedHeaders(req, deps.trusted);

      const what = intercept(routes, method, path);
      if (what === undefined) {
        void passThrough(req, res, {
          upstream: deps.upstream,
          headerTimeoutMs: deps.config.upstreamHeaderTimeoutMs,
          forwarded,
          target: upstreamTarget(req.url ?? "/"),
        });
        return;
      }
      if (what.kind === "health") return sendJson(res, 200, { status: "ok" });
      if (what.kind === "preflight") return sendPreflight(res);
      const hit = what.hit;
      hit.handler({ req, res, params: hit.params, target, forwarded, deps }).catch((err) => {
        if (!res.destroyed) sendError(res, err);
      });
    }),
  );
}
