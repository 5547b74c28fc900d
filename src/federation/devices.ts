// Fetch a remote user's device list over federation and verify it
// (server-server-api §Device Management, GET /_matrix/federation/v1/user/devices/{userId}).
import type { Logger } from "../observe/log.ts";
import type { DeviceSnapshot } from "../matrix/device.ts";
import { type DroppedParts, validateUserDevices } from "./device-validate.ts";
import { FederationError } from "./errors.ts";
import type { HttpsResponse } from "./https.ts";
import { type SigningKey, xMatrixAuthorization } from "./signing.ts";
import type { FederationTransport } from "./transport.ts";
import { serverOf } from "../matrix/user-id.ts";

export type { DroppedParts } from "./device-validate.ts";

/** Remote text in a log line is cut here: a hostile answer must not make huge lines. */
const LOG_TEXT_MAX = 200;
const cut = (t: string): string => (t.length > LOG_TEXT_MAX ? `${t.slice(0, LOG_TEXT_MAX)}…` : t);

/**
 * One info line per dropped part (at most MAX_DESCRIBED per answer, then one line with the rest
 * counted): a dropped device is invisible to clients unless the homeserver lists it, so an
 * operator must be able to see which one and why without turning on debug.
 */
export function logDroppedParts(log: Pick<Logger, "info">, userId: string, dropped: DroppedParts): void {
  for (const p of dropped.parts) {
    const fields: Record<string, unknown> = { userId, part: p.part, reason: cut(p.reason) };
    if (p.deviceId !== undefined) fields.deviceId = cut(p.deviceId);
    log.info("dropped an invalid part of a remote device list", fields);
  }
  if (dropped.unlisted > 0)
    log.info("dropped more invalid parts of a remote device list", { userId, count: dropped.unlisted });
}

/**
 * The body cap to give the federation transport (its `maxBytes`; the transport applies one
 * cap to every request). 1000 devices of ~1 KiB each fit many times over; anything bigger
 * is refused before it is parsed.
 */
export const DEVICE_LIST_MAX_BYTES = 8 * 1024 * 1024;

export interface FetchDevicesDeps {
  transport: FederationTransport;
  /** Our server name: the homeserver's, whose key signs the request. */
  origin: string;
  key: SigningKey;
  now?: () => number;
}

/**
 * The server name of a user id: everything after the first ':' (appendices §User
 * Identifiers; the server name may itself contain ':' for a port or an IPv6 literal).
 */
export function serverNameOf(userId: string): string {
  const colon = userId.indexOf(":");
  if (!userId.startsWith("@") || colon < 2 || colon === userId.length - 1) {
    throw new FederationError("invalid", `not a user id: ${JSON.stringify(userId)}`);
  }
  return serverOf(userId);
}

/**
 * GET, signed with X-Matrix. `uri` is both the path sent and the `uri` signed: it is never
 * re-encoded after signing, because the receiver verifies against its raw request target
 * (server-server-api §Request Authentication). A GET signs no `content`.
 */
function signedGet(deps: FetchDevicesDeps, destination: string, uri: string): Promise<HttpsResponse> {
  const authorization = xMatrixAuthorization({ method: "GET", uri, origin: deps.origin, destination }, deps.key);
  return deps.transport.request(destination, {
    method: "GET",
    path: uri,
    headers: { authorization, accept: "application/json" },
  });
}

const NOT_JSON = Symbol("not JSON");

function parseJson(body: Uint8Array): unknown {
  try {
    // fatal: invalid UTF-8 is a broken answer, not something to paper over with U+FFFD.
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    return NOT_JSON;
  }
}

/** The Matrix error of a non-200 answer, for messages: "M_FOO: text", or "" when there is none. */
function matrixError(body: Uint8Array): { errcode?: string; text: string } {
  const parsed = parseJson(body);
  if (typeof parsed !== "object" || parsed === null) return { text: "" };
  const { errcode, error } = parsed as { errcode?: unknown; error?: unknown };
  if (typeof errcode !== "string") return { text: "" };
  const detail = typeof error === "string" ? `: ${error.slice(0, 200)}` : "";
  return { errcode, text: ` (${errcode}${detail})` };
}

/**
 * Does the user exist? Synapse answers the device query for ANY user id on its server with
 * 200 and an empty list (synapse/handlers/device.py `on_federation_query_user_devices` reads
 * the device and cross-signing tables without checking the user; the servlet
 * `FederationUserDevicesQueryServlet` in synapse/federation/transport/server/federation.py
 * returns it as is), and Dendrite does the same (federationapi/routing/devices.go
 * `GetUserDevices`). The profile query does check: Synapse raises 404 M_NOT_FOUND
 * "Profile was not found" (synapse/handlers/profile.py `on_profile_query`), Dendrite 404
 * M_NOT_FOUND (federationapi/routing/profile.go `GetProfile`).
 * Only that answer means "no such user", and only Synapse and Dendrite give it. Tuwunel (1.4.6;
 * src/api/server/query.rs `get_profile_information_route` and user.rs `get_devices_route` check
 * only that the user is local) and conduwuit answer a user that does not exist with `{}` and
 * `{"stream_id":0,"devices":[]}`: the refresh then stores an empty list and answers 202, not
 * 404 (README.md says so). 404 M_UNRECOGNIZED is a server without the endpoint,
 * and 403 is Synapse with `allow_profile_lookup_over_federation: false`: both leave the empty
 * list standing. Network failures propagate, so the whole refresh is retried later.
 */
async function confirmUserExists(deps: FetchDevicesDeps, destination: string, userId: string): Promise<void> {
  const uri = `/_matrix/federation/v1/query/profile?user_id=${encodeURIComponent(userId)}`;
  const res = await signedGet(deps, destination, uri);
  if (res.status !== 404) return;
  const err = matrixError(res.body);
  if (err.errcode === "M_UNRECOGNIZED") return;
  throw new FederationError("not_found", `${destination} says ${userId} does not exist${err.text}`, 404);
}

/**
 * Fetch and verify `userId`'s device list from the user's own server. `destination` is the
 * server name in the user id, before any delegation (server-server-api §Request
 * Authentication). Errors: "not_found" (404, or the user does not exist), "remote" (any
 * other non-200, with `status`), "invalid" (not JSON, wrong shape, wrong user, > 1000
 * devices), plus whatever the transport throws ("transport", "timeout", "refused", "too_large").
 */
export async function fetchUserDevices(
  deps: FetchDevicesDeps,
  userId: string,
): Promise<{ snapshot: DeviceSnapshot; dropped: DroppedParts }> {
  const destination = serverNameOf(userId);
  // encodeURIComponent turns "@" into %40 and ":" into %3A, as the spec's examples do.
  const uri = `/_matrix/federation/v1/user/devices/${encodeURIComponent(userId)}`;
  const res = await signedGet(deps, destination, uri);
  if (res.status === 404) {
    // 404 M_UNRECOGNIZED is "no such endpoint" (what Synapse answers for unknown paths), not
    // "no such user": report it as a remote failure so it is retried instead of final.
    const err = matrixError(res.body);
    const kind = err.errcode === "M_UNRECOGNIZED" ? "remote" : "not_found";
    throw new FederationError(kind, `${destination} has no device list for ${userId}${err.text}`, 404);
  }
  if (res.status !== 200) {
    throw new FederationError(
      "remote",
      `${destination} answered ${res.status} for ${userId}'s devices${matrixError(res.body).text}`,
      res.status,
    );
  }
  const body = parseJson(res.body);
  if (body === NOT_JSON)
    throw new FederationError("invalid", `${destination} answered ${userId}'s devices with something that is not JSON`);
  const { snapshot, dropped, remoteEmpty } = validateUserDevices(body, userId, (deps.now ?? Date.now)());
  if (remoteEmpty) await confirmUserExists(deps, destination, userId);
  return { snapshot, dropped };
}
