// The MSC2638 story shared by test/e2e/resync.test.ts and scripts/demo.ts: alice on hs1 and
// bob on hs2, with device keys and cross-signing keys, in an encrypted room, hs1 caching
// bob's keys. Also the read-only views both need: who lists which devices, and hs2's log.
import { readFile, stat } from "node:fs/promises";
import type { Homeserver } from "../../../scripts/homeservers.ts";
import { createRoom, keysQuery, register, waitFor, type KeysQueryAnswer, type Session } from "./client.ts";
import { uploadCrossSigning, uploadDeviceKeys, type CrossSigning, type UploadedDevice } from "./e2ee.ts";
import { joinOverFederation } from "./scenario.ts";

export interface Story {
  alice: Session;
  bob: Session;
  bobDevice: UploadedDevice;
  bobCrossSigning: CrossSigning;
  roomId: string;
}

/** Steps 1–4 of the issue; `say` narrates each. `suffix` keeps user ids unique per run. */
export async function meetAliceAndBob(
  hs1: Homeserver,
  hs2: Homeserver,
  say: (s: string) => void = () => {},
  suffix = "",
): Promise<Story> {
  const alice = await register(hs1.clientUrl, `alice${suffix}`);
  const bob = await register(hs2.clientUrl, `bob${suffix}`);
  say(`registered ${alice.userId} on hs1 and ${bob.userId} on hs2`);
  await uploadDeviceKeys(alice);
  const bobDevice = await uploadDeviceKeys(bob);
  const bobCrossSigning = await uploadCrossSigning(bob, bobDevice);
  say(`bob uploaded keys for his device ${bob.deviceId} and his cross-signing keys`);
  const roomId = await createRoom(alice, [bob.userId]);
  await joinOverFederation(alice, bob, roomId, hs1.serverName);
  say(`alice created the encrypted room ${roomId} and bob joined it`);
  // Sharing a room makes hs1 track bob's list: its first query fetches it over federation and
  // caches it (device_lists_remote_cache), so later queries are answered from that cache.
  const masterKey = Object.keys((bobCrossSigning.masterKey.keys as Record<string, string>) ?? {})[0];
  await waitFor(
    "hs1 to serve bob's device and master key",
    async () => {
      const view = viewOf(await keysQuery(alice, [bob.userId]), bob.userId);
      return view.deviceIds.includes(bob.deviceId) && view.masterKeyId === masterKey ? true : undefined;
    },
    60_000,
  );
  say(`alice queried bob's keys: hs1 now caches 1 device and his master key`);
  return { alice, bob, bobDevice, bobCrossSigning, roomId };
}

export interface UserKeysView {
  deviceIds: string[];
  /** `ed25519:<pubkey>` of the master key, if any. */
  masterKeyId?: string;
  selfSigningKeyId?: string;
  device(id: string): Record<string, unknown> | undefined;
}

/** One user's part of a /keys/query answer. */
export function viewOf(answer: KeysQueryAnswer, userId: string): UserKeysView {
  const devices = answer.device_keys[userId] ?? {};
  const keyId = (k: Record<string, unknown> | undefined) =>
    Object.keys((k?.keys as Record<string, string> | undefined) ?? {})[0];
  return {
    deviceIds: Object.keys(devices).sort(),
    masterKeyId: keyId(answer.master_keys?.[userId]),
    selfSigningKeyId: keyId(answer.self_signing_keys?.[userId]),
    device: (id) => devices[id],
  };
}

/** What `as`'s server (or the proxy in front of it: as.clientUrl decides) says of userId's keys. */
export async function keysView(as: Session, userId: string): Promise<UserKeysView> {
  return viewOf(await keysQuery(as, [userId]), userId);
}

export const crossSigningKeyId = (c: CrossSigning): string => `ed25519:${c.master.publicKey}`;

/** The size of a log file now: read lines after this offset to see only what happens next. */
export async function logOffset(path: string): Promise<number> {
  return (await stat(path)).size;
}

/**
 * hs2's access-log lines (synapse.access.*) for federation device-list requests about
 * `userId` after `offset`. Synapse writes `{origin}` for a request whose X-Matrix signature
 * it verified, then the status, the request line and the User-Agent.
 */
export async function federationDeviceRequests(
  logPath: string,
  userId: string,
  offset = 0,
): Promise<{ origin: string; status: number; userAgent: string; line: string }[]> {
  const text = (await readFile(logPath)).subarray(offset).toString("utf8");
  const path = `/_matrix/federation/v1/user/devices/${encodeURIComponent(userId)}`;
  const out = [];
  for (const line of text.split("\n")) {
    if (!line.includes("synapse.access.") || !line.includes(`"GET ${path} `)) continue;
    const m = /\{([^}]*)\} Processed request: .* (\d{3}) "GET [^"]*" "([^"]*)"/.exec(line);
    if (m) out.push({ origin: m[1]!, status: Number(m[2]), userAgent: m[3]!, line });
  }
  return out;
}
