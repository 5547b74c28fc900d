import type { RouteContext } from "./context.ts";
import { rewriteGet } from "./rewrite.ts";

const MSC2638_FEATURE = "org.matrix.msc2638";

/** GET /_matrix/client/versions: the homeserver's answer, plus our unstable feature flag. */
export function versionsRoute(ctx: RouteContext): Promise<void> {
  return rewriteGet(ctx, 1 << 20, (body) => {
    const unstable = body.unstable_features;
    body.unstable_features = {
      ...(unstable && typeof unstable === "object" && !Array.isArray(unstable) ? unstable : {}),
      [MSC2638_FEATURE]: true,
    };
  });
}
