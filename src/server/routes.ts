import type { Handler } from "./app.ts";
import { Router } from "./router.ts";
import { versionsRoute } from "../routes/versions.ts";

/**
 * The route table: every request the proxy intercepts. Anything not listed here streams
 * through to the homeserver untouched. Patterns also match with a trailing slash.
 */
export function buildRoutes(): Router<Handler> {
  const r = new Router<Handler>();
  r.add(["GET"], "/_matrix/client/versions", versionsRoute);
  return r;
}
