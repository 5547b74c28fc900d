// Builders for a remote user's device list, signed the way a real client signs it: each
// device's keys self-signed with its ed25519 key, a master key, and a self-signing key signed
// by the master key that also signs every device.
//
// Signing here deliberately shares NO code with src/ (same reason as xmatrix-check.ts): a
// canonical-JSON bug in src/ must not be able to agree with itself. The sorted-key JSON below
// uses JS sort() (UTF-16 order); every signed key name in these fixtures is ASCII.
import { Buffer } from "node:buffer";
import { generateKeyPairSync, sign, type KeyObject } from "node:crypto";

export type Json = Record<string, unknown>;

export interface Ed25519 {
  /** Unpadded standard base64 of the 32-byte public key. */
  pub: string;
  privateKey: KeyObject;
}

export function newEd25519(): Ed25519 {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  const spki = publicKey.export({ format: "der", type: "spki" });
  return { pub: b64(spki.subarray(spki.length - 32)), privateKey };
}

function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64").replace(/=+$/, "");
}

function sortedJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(sortedJson).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const o = v as Json;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${sortedJson(o[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}

/** Copy of `obj` with `signatures[entity][keyId]` added; `signatures` and `unsigned` are not signed. */
export function signWith<T extends Json>(obj: T, entity: string, keyId: string, key: Ed25519): T {
  const { signatures, unsigned: _u, ...rest } = obj as Json;
  const sig = b64(sign(null, Buffer.from(sortedJson(rest), "utf8"), key.privateKey));
  const all = (signatures ?? {}) as Record<string, Record<string, string>>;
  return { ...obj, signatures: { ...all, [entity]: { ...all[entity], [keyId]: sig } } };
}

/** One entry of the federation answer's `devices` array. */
export interface DeviceEntry {
  device_id: string;
  keys?: Json;
  device_display_name?: string;
  /** Tests may add or break fields. */
  [field: string]: unknown;
}

export interface FakeDevice {
  entry: DeviceEntry;
  key: Ed25519;
}

export function makeDevice(userId: string, deviceId: string, displayName?: string): FakeDevice {
  const key = newEd25519();
  const keys = signWith(
    {
      user_id: userId,
      device_id: deviceId,
      algorithms: ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
      keys: { [`curve25519:${deviceId}`]: newEd25519().pub, [`ed25519:${deviceId}`]: key.pub },
    },
    userId,
    `ed25519:${deviceId}`,
    key,
  );
  const entry: DeviceEntry = { device_id: deviceId, keys };
  if (displayName !== undefined) entry.device_display_name = displayName;
  return { entry, key };
}

export interface CrossSigning {
  master: Json;
  selfSigning: Json;
  masterKey: Ed25519;
  selfSigningKey: Ed25519;
}

export function makeCrossSigningKey(userId: string, usage: string, key: Ed25519): Json {
  return { user_id: userId, usage: [usage], keys: { [`ed25519:${key.pub}`]: key.pub } };
}

export function makeCrossSigning(userId: string): CrossSigning {
  const masterKey = newEd25519();
  const selfSigningKey = newEd25519();
  const master = makeCrossSigningKey(userId, "master", masterKey);
  const selfSigning = signWith(
    makeCrossSigningKey(userId, "self_signing", selfSigningKey),
    userId,
    `ed25519:${masterKey.pub}`,
    masterKey,
  );
  return { master, selfSigning, masterKey, selfSigningKey };
}

/** A remote user as the fake remote serves it. */
export interface FakeUser {
  userId: string;
  streamId: number;
  devices: DeviceEntry[];
  /** null is what Synapse sends for "no such key". */
  masterKey: Json | null;
  selfSigningKey: Json | null;
  /** The device keys, by device id, to re-sign or tamper with in tests. */
  deviceKeys: Record<string, Ed25519>;
  crossSigning?: CrossSigning;
  /** The profile query's answer; the fake answers 404 M_NOT_FOUND for users it does not know. */
  displayname?: string;
}

export interface MakeUserOptions {
  /** Device ids, or a count (devices DEV0, DEV1, …). Default ["DEV0"]. */
  devices?: string[] | number;
  displayNames?: Record<string, string>;
  /** Add master and self-signing keys, and sign every device with the self-signing key. Default true. */
  crossSigning?: boolean;
  streamId?: number;
}

export function makeUser(userId: string, opts: MakeUserOptions = {}): FakeUser {
  const ids =
    typeof opts.devices === "number"
      ? Array.from({ length: opts.devices }, (_, i) => `DEV${i}`)
      : (opts.devices ?? ["DEV0"]);
  const cs = opts.crossSigning === false ? undefined : makeCrossSigning(userId);
  const deviceKeys: Record<string, Ed25519> = {};
  const devices = ids.map((id) => {
    const d = makeDevice(userId, id, opts.displayNames?.[id]);
    deviceKeys[id] = d.key;
    if (cs && d.entry.keys)
      d.entry.keys = signWith(d.entry.keys, userId, `ed25519:${cs.selfSigningKey.pub}`, cs.selfSigningKey);
    return d.entry;
  });
  const user: FakeUser = {
    userId,
    streamId: opts.streamId ?? 1,
    devices,
    masterKey: cs?.master ?? null,
    selfSigningKey: cs?.selfSigning ?? null,
    deviceKeys,
    displayname: userId.slice(1, userId.indexOf(":")),
  };
  if (cs) user.crossSigning = cs;
  return user;
}

/** The body of GET /_matrix/federation/v1/user/devices/{userId} for `user`, as Synapse shapes it. */
export function devicesAnswer(user: FakeUser): Json {
  return {
    user_id: user.userId,
    stream_id: user.streamId,
    devices: user.devices,
    master_key: user.masterKey,
    self_signing_key: user.selfSigningKey,
  };
}
