import type { RouteContext } from "../server/app.ts";
import { parseJsonObject, readBody } from "../server/body.ts";
import { sendError } from "../server/errors.ts";
import { pipeResponse, upstreamHeaders } from "../server/passthrough.ts";
import { stripHopByHop } from "../server/upstream.ts";

export const MSC2638_FEATURE = "org.matrix.msc2638";

/** GET /_matrix/client/versions: the homeserver's answer, plus our unstable feature flag. */
export async function versionsRoute(ctx: RouteContext): Promise<void> {
  const { req, res, deps } = ctx;
  try {
    const up = await deps.upstream.open({
      method: "GET",
      target: ctx.target,
      // We rewrite the body, so ask for it uncompressed rather than inflating it ourselves.
      headers: { ...upstreamHeaders(req, ctx.forwarded), "accept-encoding": "identity" },
      headerTimeoutMs: deps.config.upstreamHeaderTimeoutMs,
      clientRes: res,
    });
    if (up.statusCode !== 200 || up.headers["content-encoding"]) return pipeResponse(up, res);
    const raw = await readBody(up, 1 << 20);
    const body = parseJsonObject(raw);
    const headers = stripHopByHop(up.headers);
    delete headers["content-length"];
    if (!body) {
      res.writeHead(200, headers);
      return void res.end(raw);
    }
    const unstable = body.unstable_features;
    body.unstable_features = {
      ...(unstable && typeof unstable === "object" && !Array.isArray(unstable) ? unstable : {}),
      [MSC2638_FEATURE]: true,
    };
    const out = JSON.stringify(body);
    res.writeHead(200, { ...headers, "content-length": String(Buffer.byteLength(out)) });
    res.end(out);
  } catch (err) {
    if (!res.destroyed) sendError(res, err);
  }
}
