import type { Handler } from "./context.ts";
import { CLIENT_VERSIONS, Router } from "../http/router.ts";
import { keysChangesRoute } from "./keys-changes.ts";
import { keysQueryRoute } from "./keys-query.ts";
import { refreshRoute } from "./refresh.ts";
import { syncRoute } from "./sync.ts";
import { versionsRoute } from "./versions.ts";

/**
 * The route table: every request the proxy intercepts. Anything not listed here streams
 * through to the homeserver untouched. Patterns also match with a trailing slash.
 */
export function buildRoutes(): Router<Handler> {
  const r = new Router<Handler>();
  r.add(["GET"], "/_matrix/client/versions", versionsRoute);
  // MSC2638: the proposal's r0 name, current v3, the client unstable prefix, and the MSC's
  // own literal unstable route (a GET, outside /client/).
  r.add(["POST"], `/_matrix/client/${CLIENT_VERSIONS}/user/:userId/devices/refresh`, refreshRoute);
  r.add(["POST"], "/_matrix/client/unstable/org.matrix.msc2638/user/:userId/devices/refresh", refreshRoute);
  r.add(["GET", "POST"], "/_matrix/unstable/org.matrix.msc2638/user/:userId/devices", refreshRoute);

  // Delivery: fresh lists reach clients through /keys/query and device_lists.changed.
  r.add(["GET"], `/_matrix/client/${CLIENT_VERSIONS}/sync`, syncRoute("sync"));
  r.add(["POST"], "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", syncRoute("sliding"));
  r.add(["POST"], `/_matrix/client/${CLIENT_VERSIONS}/keys/query`, keysQueryRoute);
  r.add(["POST"], "/_matrix/client/unstable/keys/query", keysQueryRoute);
  r.add(["GET"], `/_matrix/client/${CLIENT_VERSIONS}/keys/changes`, keysChangesRoute);
  return r;
}
