// Who may use the admin API: a homeserver admin, as the homeserver itself says. The token is
// resolved with /account/whoami (the shared cache), then Synapse's "Query user admin status"
// (admin_api/user_admin_api §Get whether a user is a server administrator or not), which itself
// refuses callers that are not admins. Nothing is cached: demoting an admin takes effect at once.
import type { IncomingMessage } from "node:http";
import type { Auth } from "../http/auth.ts";
import { accessToken, FEDERATION_AUTH } from "../http/auth.ts";
import { readBody } from "../http/body.ts";
import { MatrixError } from "../matrix/errors.ts";
import type { Upstream } from "../http/upstream.ts";

export async function requireAdmin(req: IncomingMessage, auth: Auth, upstream: Upstream): Promise<string> {
  const token = accessToken(req);
  if (!token)
    throw new MatrixError("M_MISSING_TOKEN", "Missing access token: the admin API needs a homeserver admin's token");
  // Admin jobs send federation requests: a revoked token is refused now, not when the cache expires.
  const who = await auth.resolveToken(token, FEDERATION_AUTH); // UpstreamAuthError: the homeserver's own 401, relayed
  let res;
  try {
    res = await upstream.open({
      method: "GET",
      target: `/_synapse/admin/v1/users/${encodeURIComponent(who.userId)}/admin`,
      headers: { authorization: `Bearer ${token}`, "accept-encoding": "identity" },
      headerTimeoutMs: 10_000,
    });
  } catch (e) {
    throw new MatrixError("M_UNKNOWN", `Could not verify admin rights: ${(e as Error).message}`, { status: 502 });
  }
  const body = await readBody(res, 64 * 1024);
  let admin = false;
  try {
    admin = (JSON.parse(body.toString("utf8")) as { admin?: unknown }).admin === true;
  } catch {}
  if (res.statusCode === 200 && admin) return who.userId;
  if (res.statusCode === 200 || res.statusCode === 403)
    throw new MatrixError("M_FORBIDDEN", `${who.userId} is not a server admin`);
  // Dendrite and Conduit have no such endpoint: refuse rather than guess.
  throw new MatrixError(
    "M_FORBIDDEN",
    `Could not verify admin rights: the homeserver answered ${res.statusCode} to the Synapse admin API`,
  );
}
