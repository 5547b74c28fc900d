// POST /_matrix/client/{r0,v3}/keys/query: for requested users with a fresh snapshot, the
// answer carries the snapshot instead of the homeserver's stale copy. Parsed only then.
import { overlayKeysQuery } from "../delivery/keys-overlay.ts";
import type { RouteContext } from "../server/app.ts";
import { parseJsonObject, readBody } from "../server/body.ts";
import { sendError } from "../server/errors.ts";
import { pipeResponse, upstreamHeaders } from "../server/passthrough.ts";
import { sendRewritten } from "../server/rewrite.ts";
import { serverOf } from "../resync/resyncer.ts";
import { afterKeysQuery, answerParts, watchKeysQuery } from "../resync/self-heal.ts";
import { whoIfKnown } from "./sync.ts";

export async function keysQueryRoute(ctx: RouteContext): Promise<void> {
  const { req, res, deps } = ctx;
  const svc = deps.services;
  const requestBody = await readBody(req, 8 * 1024 * 1024);
  const parsed = parseJsonObject(requestBody);
  const requested = parsed?.device_keys;
  const wanted: Record<string, string[]> = {};
  if (requested && typeof requested === "object" && !Array.isArray(requested))
    for (const [u, ids] of Object.entries(requested)) wanted[u] = Array.isArray(ids) ? ids.filter((d): d is string => typeof d === "string") : [];

  const who = Object.keys(wanted).length ? await whoIfKnown(ctx) : undefined;
  const remote = Object.keys(wanted).filter((u) => serverOf(u) !== deps.config.serverName);
  if (who) svc.delivery.trackQuery(who, remote);
  const snapshots = who ? svc.overlays.servable(remote) : new Map();

  const headers = upstreamHeaders(req, ctx.forwarded);
  headers["content-length"] = String(requestBody.length);
  delete headers["transfer-encoding"];
  // The homeserver's answer teaches us its view of the remote users (resync/self-heal.ts).
  const heal = who && remote.length ? svc.heal : undefined;
  if (snapshots.size || heal) headers["accept-encoding"] = "identity";
  try {
    const up = await deps.upstream.open({ method: "POST", target: ctx.target, headers, body: requestBody, headerTimeoutMs: deps.config.upstreamHeaderTimeoutMs, clientRes: res });
    if (snapshots.size === 0) {
      if (heal && who) watchKeysQuery(heal, up, who, wanted, remote);
      return pipeResponse(up, res);
    }
    await sendRewritten(up, res, 64 * 1024 * 1024, (answer) => {
      if (heal && who) afterKeysQuery(heal, who, wanted, remote, answerParts(answer));
      const { overlaid, caughtUp } = overlayKeysQuery(answer, wanted, snapshots);
      svc.overlays.caughtUp(caughtUp);
      svc.metrics?.overlaysServed.inc(overlaid.length);
    });
  } catch (e) {
    if (!res.destroyed) sendError(res, e);
  }
}
