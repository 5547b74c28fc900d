// A signed federation GET, as one homeserver (or a proxy holding its key) makes it to
// another (server-server-api §Request Authentication). Used to check what the remote
// would answer, independently of the proxy under test.
import { readFile } from "node:fs/promises";
import { httpsGet } from "../../../scripts/homeservers/ready.ts";
import type { Homeserver } from "../../../scripts/homeservers.ts";
import { canonicalJson, readSynapseKey, unpadded } from "./signing.ts";
import { sign } from "node:crypto";

export interface FederationAnswer<T> {
  status: number;
  body: T;
}

/**
 * GET `path` on `to`'s TLS federation listener, signed as `from` with its signing key.
 * `path` must already be encoded as it goes on the wire: the signature covers the exact
 * request target (`uri`), and Synapse verifies against the raw target.
 */
export async function signedFederationGet<T = Record<string, unknown>>(
  from: Homeserver,
  to: Homeserver,
  path: string,
): Promise<FederationAnswer<T>> {
  const key = await readSynapseKey(from.signingKeyPath);
  // GET has no body, so no "content" member (server-server-api §Request Authentication).
  const signed = { method: "GET", uri: path, origin: from.serverName, destination: to.serverName };
  const sig = unpadded(sign(null, Buffer.from(canonicalJson(signed)), key.privateKey));
  const authorization = `X-Matrix origin="${from.serverName}",destination="${to.serverName}",key="${key.keyId}",sig="${sig}"`;
  const answer = await httpsGet(`${to.federationUrl}${path}`, await readFile(to.caPath, "utf8"), { authorization });
  let body: unknown = answer.body;
  try {
    body = JSON.parse(answer.body);
  } catch {
    // leave as text
  }
  return { status: answer.status, body: body as T };
}

export interface FederationDevices {
  user_id: string;
  stream_id: number;
  devices: { device_id: string; keys?: Record<string, unknown>; device_display_name?: string }[];
  master_key?: Record<string, unknown> | null;
  self_signing_key?: Record<string, unknown> | null;
}

/** GET /_matrix/federation/v1/user/devices/{userId} on `to`, signed as `from`. */
export async function fetchRemoteDevices(
  from: Homeserver,
  to: Homeserver,
  userId: string,
): Promise<FederationAnswer<FederationDevices>> {
  return signedFederationGet<FederationDevices>(
    from,
    to,
    `/_matrix/federation/v1/user/devices/${encodeURIComponent(userId)}`,
  );
}
