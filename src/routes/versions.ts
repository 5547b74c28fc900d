import type { RouteContext } from "../server/app.ts";
import { sendError } from "../server/errors.ts";
import { upstreamHeaders } from "../server/passthrough.ts";
import { sendRewritten } from "../server/rewrite.ts";

export const MSC2638_FEATURE = "org.matrix.msc2638";

/** GET /_matrix/client/versions: the homeserver's answer, plus our unstable feature flag. */
export async function versionsRoute(ctx: RouteContext): Promise<void> {
  const { req, res, deps } = ctx;
  try {
    const up = await deps.upstream.open({
      method: "GET",
      target: ctx.target,
      headers: { ...upstreamHeaders(req, ctx.forwarded), "accept-encoding": "identity" },
      headerTimeoutMs: deps.config.upstreamHeaderTimeoutMs,
      clientRes: res,
    });
    await sendRewritten(up, res, 1 << 20, (body) => {
      const unstable = body.unstable_features;
      body.unstable_features = {
        ...(unstable && typeof unstable === "object" && !Array.isArray(unstable) ? unstable : {}),
        [MSC2638_FEATURE]: true,
      };
    });
  } catch (err) {
    if (!res.destroyed) sendError(res, err);
  }
}
