// `doctor REMOTE`: does REMOTE accept our X-Matrix signature? Reaching /version proves only the
// network path; every request the proxy really makes is signed, and a remote that cannot
// verify the signature refuses all of them. So doctor sends one signed request, the same
// device-list query a refresh sends (server-server-api §GET /_matrix/federation/v1/user/devices/{userId}),
// about a made-up user, and reads the answer:
//
// - Synapse authenticates before routing to the servlet (synapse/federation/transport/server/
//   _base.py `Authenticator.authenticate_request`): no usable key for our origin is
//   401 M_UNAUTHORIZED "Failed to find any key to satisfy…", a bad signature 401 M_UNAUTHORIZED
//   "Invalid signature for server…", a destination that is not its name 401 M_UNAUTHORIZED, a
//   malformed header 400 M_UNAUTHORIZED, and an origin outside its `federation_domain_whitelist`
//   403 M_FORBIDDEN. Conduit and conduwuit answer a signature they cannot verify with
//   403 M_FORBIDDEN "Failed to verify X-Matrix signatures.".
// - Past authentication, Synapse and Dendrite answer the device query for any user id of their
//   own server with 200 and an empty list (see src/federation/devices.ts `confirmUserExists`);
//   a server that checks the user exists answers 404 M_NOT_FOUND. Either means "verified".
import { randomBytes } from "node:crypto";
import { type SigningKey, xMatrixAuthorization } from "../federation/signing.ts";
import type { FederationTransport } from "../federation/transport.ts";

export interface SignatureCheck {
  /** accepted: the remote verified the signature; refused: it did not; unknown: cannot tell. */
  status: "accepted" | "refused" | "unknown";
  /** One line: the verdict and what the remote answered. */
  line: string;
  /** Likely causes, for a refusal or an answer that proves nothing. */
  hints: string[];
}

export interface SignatureCheckDeps {
  transport: FederationTransport;
  /** Our server name (--server-name): the X-Matrix origin. */
  origin: string;
  key: SigningKey;
  now?: () => number;
}

/** Beyond this, a clock difference is worth naming (Date headers have one-second resolution). */
const CLOCK_NOTE_MS = 30_000;

/** A user id on `server` that no account has: random, so nothing real is ever looked up. */
function madeUpUser(server: string): string {
  return `@resync-doctor-${randomBytes(8).toString("hex")}:${server}`;
}

function matrixError(body: Uint8Array): { errcode: string; error: string } | undefined {
  try {
    const parsed = JSON.parse(new TextDecoder().decode(body)) as { errcode?: unknown; error?: unknown };
    if (typeof parsed?.errcode !== "string") return undefined;
    return { errcode: parsed.errcode, error: typeof parsed.error === "string" ? parsed.error.slice(0, 300) : "" };
  } catch {
    return undefined;
  }
}

/** "how far the remote's clock is from ours", from its Date header, when that is notable. */
function clockNote(date: unknown, now: number): string | undefined {
  const at = typeof date === "string" ? Date.parse(date) : Number.NaN;
  if (Number.isNaN(at) || Math.abs(at - now) < CLOCK_NOTE_MS) return undefined;
  const s = Math.round((at - now) / 1000);
  return `the remote's clock reads ${Math.abs(s)} s ${s > 0 ? "ahead of" : "behind"} this machine's (its Date header)`;
}

function refusalHints(deps: SignatureCheckDeps, clock: string | undefined): string[] {
  const o = deps.origin;
  return [
    `the key: the remote fetches ${o}'s keys from https://${o}/_matrix/key/v2/server (found through ${o}'s .well-known or SRV records); it must publish ${deps.key.keyId} with public key ${deps.key.publicKey} and be reachable from outside (see "key published by" above)`,
    `the name: --server-name ${o} must be the homeserver's own server_name, the name its key is published under`,
    `the clock: a remote refuses a key whose valid_until_ts has passed by its own clock, so a homeserver or remote clock far off breaks verification${clock ? `; ${clock}` : ""}`,
  ];
}

/** Send one signed GET to `server` and say whether it verified our X-Matrix signature. */
export async function checkRemoteAcceptsSignature(deps: SignatureCheckDeps, server: string): Promise<SignatureCheck> {
  const user = madeUpUser(server);
  // Signed exactly as sent: encodeURIComponent once, never re-encoded (server-server-api §Request Authentication).
  const uri = `/_matrix/federation/v1/user/devices/${encodeURIComponent(user)}`;
  const authorization = xMatrixAuthorization(
    { method: "GET", uri, origin: deps.origin, destination: server },
    deps.key,
  );
  const what = `signed request to ${server}`;
  let res;
  try {
    res = await deps.transport.request(server, {
      method: "GET",
      path: uri,
      headers: { authorization, accept: "application/json" },
    });
  } catch (e) {
    return { status: "unknown", line: `${what}: cannot tell: ${(e as Error).message}`, hints: [] };
  }
  const err = matrixError(res.body);
  const answered = `${res.status}${err ? ` ${err.errcode}${err.error ? ` (${err.error})` : ""}` : ""}`;
  const clock = clockNote(res.headers["date"], (deps.now ?? Date.now)());
  const how = `GET /_matrix/federation/v1/user/devices/… as ${deps.origin} with ${deps.key.keyId}`;

  if (res.status === 200 || (res.status === 404 && err?.errcode === "M_NOT_FOUND")) {
    return {
      status: "accepted",
      line: `${what}: accepted: the remote verified our X-Matrix signature (${how} answered ${answered})`,
      hints: [],
    };
  }
  const refused =
    res.status === 401 ||
    (res.status === 403 && err?.errcode === "M_FORBIDDEN") ||
    (res.status === 400 && err?.errcode === "M_UNAUTHORIZED");
  if (refused) {
    const hints = refusalHints(deps, clock);
    if (res.status === 403)
      hints.push(
        `an allow-list: a remote that federates only with listed servers (Synapse's federation_domain_whitelist) answers 403 to everyone else`,
      );
    return {
      status: "refused",
      line: `${what}: refused: ${answered}: the remote did not accept our X-Matrix signature (${how})`,
      hints,
    };
  }
  // 404 M_UNRECOGNIZED is Synapse's answer for a path it has no servlet for, given before any
  // authentication: it proves nothing about the signature, and a refresh needs that endpoint.
  const unserved =
    res.status === 404 && err?.errcode === "M_UNRECOGNIZED"
      ? "; the remote does not serve the device-list endpoint, so no refresh of its users can work"
      : "";
  return {
    status: "unknown",
    line: `${what}: cannot tell: ${answered}${unserved} (${how})`,
    hints: clock ? [clock] : [],
  };
}
