// The one mapping from a failed device-list fetch to what a client (refresh route) or an
// operator (admin API) is told: not found → 404, a remote that did not answer in time → 504,
// anything else the remote did wrong → 502 (RFC 9110 §15.6.3, the gateway's failure, never our
// own 500), with the remote's status and the next retry when known.
import type { FederationError } from "../federation/errors.ts";
import { MatrixError } from "../matrix/errors.ts";

export function refreshFailed(target: string, e: FederationError, nextRetryInMs?: number): MatrixError {
  if (e.kind === "not_found") return new MatrixError("M_NOT_FOUND", `${target} does not exist on their homeserver`);
  const extra: Record<string, unknown> = {};
  if (e.status !== undefined) extra.remote_status = e.status;
  if (nextRetryInMs !== undefined) extra.next_retry_in_ms = nextRetryInMs;
  const what =
    e.kind === "refused"
      ? "Refusing to contact the user's homeserver"
      : "Could not fetch the device list from the user's homeserver";
  return new MatrixError("M_UNKNOWN", `${what}: ${e.message}`, { status: e.kind === "timeout" ? 504 : 502, extra });
}
