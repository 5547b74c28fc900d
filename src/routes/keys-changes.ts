// GET /_matrix/client/{r0,v3}/keys/changes?from=&to=: after a restart clients catch up here,
// so pending deliveries appear in `changed` too. Nothing is acknowledged: /sync does that.
import { keysChangesInject } from "../delivery/json/sync-inject.ts";
import { pendingTargets } from "../delivery/sync-plan.ts";
import type { RouteContext } from "./context.ts";
import { passThrough } from "../http/passthrough.ts";
import { rewriteGet } from "./rewrite.ts";
import { storeFallback } from "../store/store-guard.ts";
import { whoIfKnown } from "./sync.ts";
import { upstreamTarget } from "../delivery/tokens.ts";

export async function keysChangesRoute(ctx: RouteContext): Promise<void> {
  const { req, res, deps } = ctx;
  const svc = deps.services;
  const who = await whoIfKnown(ctx);
  const pending = who ? await storeFallback(() => pendingTargets(svc, who), []) : [];
  if (pending.length === 0)
    return passThrough(req, res, {
      upstream: deps.upstream,
      headerTimeoutMs: deps.config.upstreamHeaderTimeoutMs,
      forwarded: ctx.forwarded,
      target: upstreamTarget(req.url ?? "/"),
    });
  await rewriteGet(ctx, 16 * 1024 * 1024, (body) => {
    svc.metrics?.injections.inc({ endpoint: "keys_changes" }, keysChangesInject(body, pending).length);
  });
}
