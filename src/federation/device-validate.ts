// Validation of a remote answer to GET /_matrix/federation/v1/user/devices/{userId}
// (server-server-api §Device Management; docs/architecture.md "Federation", "Validate the remote answer").
//
// Two layers: valibot checks the shape, then every part is checked against the target user and
// its own signatures. A part that fails is dropped, counted and described (for the log); only
// an answer about the wrong user, a malformed envelope or more than MAX_DEVICES devices rejects
// the whole answer. The ids of dropped devices are kept in the snapshot (`invalidDevices`): a
// strict remote can break a device's signature by leaving out a signed field it does not know
// (MSC3814's `"dehydrated": true`), and /keys/query must then show the homeserver's copy of that
// device rather than hide it (src/delivery/keys-overlay.ts).
import * as v from "valibot";
import type { DeviceSnapshot } from "../matrix/device.ts";
import { decodeBase64 } from "./base64.ts";
import { FederationError } from "./errors.ts";
import { verifyJsonSignature } from "./signing.ts";

/**
 * Synapse ignores a device-list snapshot with more than 1000 devices
 * (synapse/handlers/device.py `_user_device_resync_returning_failed`, "Ignoring device list
 * snapshot ... >1K devs"); a list that long is a broken bot, and we refuse it the same way.
 */
export const MAX_DEVICES = 1000;
/** Dropped parts described per answer; the rest are only counted, so a hostile answer cannot flood logs. */
const MAX_DESCRIBED = 20;

export interface DroppedPart {
  part: "device" | "master_key" | "self_signing_key";
  /** The device's id, when the entry had one. */
  deviceId?: string;
  reason: string;
}

export interface DroppedParts {
  devices: number;
  masterKey: boolean;
  selfSigningKey: boolean;
  /** At most MAX_DESCRIBED, in answer order. */
  parts: DroppedPart[];
  /** Dropped parts beyond those described. */
  unlisted: number;
}

export interface ValidatedDevices {
  snapshot: DeviceSnapshot;
  dropped: DroppedParts;
  /** The remote listed no device and no cross-signing key at all (before any dropping). */
  remoteEmpty: boolean;
}

const Signatures = v.record(v.string(), v.record(v.string(), v.string()));

const Answer = v.looseObject({
  user_id: v.string(),
  stream_id: v.pipe(v.number(), v.safeInteger()),
  devices: v.array(v.unknown()),
  // Synapse sends `null` when the user has no such key; others omit it.
  master_key: v.nullish(v.unknown()),
  self_signing_key: v.nullish(v.unknown()),
});

const DeviceEntry = v.looseObject({
  device_id: v.pipe(v.string(), v.minLength(1)),
  // Synapse omits `keys` for a device that never uploaded any
  // (synapse/storage/databases/main/end_to_end_keys.py
  // `_get_e2e_device_keys_for_federation_query_inner`); /keys/query never shows such devices.
  keys: v.nullish(v.unknown()),
  device_display_name: v.optional(v.unknown()),
});

const DeviceKeys = v.looseObject({
  user_id: v.string(),
  device_id: v.string(),
  algorithms: v.array(v.string()),
  keys: v.record(v.string(), v.string()),
  signatures: Signatures,
});

const CrossSigningKey = v.looseObject({
  user_id: v.string(),
  usage: v.array(v.string()),
  keys: v.record(v.string(), v.string()),
  signatures: v.optional(Signatures),
});

type Json = Record<string, unknown>;
type Checked<T> = { ok: true; value: T } | { ok: false; why: string; id?: string };

function shapeProblem(issues: readonly v.BaseIssue<unknown>[]): string {
  const first = issues[0];
  if (!first) return "wrong shape";
  const path = v.getDotPath(first);
  return path ? `${path}: ${first.message}` : first.message;
}

function checkDevice(raw: unknown, target: string): Checked<{ id: string; keys: Json | null }> {
  const entry = v.safeParse(DeviceEntry, raw);
  if (!entry.success) {
    const maybeId = typeof raw === "object" && raw !== null ? (raw as Json).device_id : undefined;
    const why = `a device entry has the wrong shape (${shapeProblem(entry.issues)})`;
    return typeof maybeId === "string" && maybeId !== "" ? { ok: false, why, id: maybeId } : { ok: false, why };
  }
  const id = entry.output.device_id;
  const bad = (why: string): Checked<never> => ({ ok: false, why, id });
  const rawKeys = entry.output.keys;
  if (rawKeys === undefined || rawKeys === null) return { ok: true, value: { id, keys: null } };
  const parsed = v.safeParse(DeviceKeys, rawKeys);
  if (!parsed.success) return bad(`keys have the wrong shape (${shapeProblem(parsed.issues)})`);
  const k = parsed.output;
  if (k.user_id !== target) return bad(`keys.user_id is ${k.user_id}`);
  if (k.device_id !== id) return bad(`keys.device_id is ${k.device_id}`);
  // The device signs its own keys with its ed25519 key (client-server API §Device keys);
  // without that signature a server could substitute keys for a device.
  const keyId = `ed25519:${id}`;
  const pub = k.keys[keyId];
  if (pub === undefined) return bad(`no ${keyId} key`);
  if (!verifyJsonSignature(rawKeys, target, keyId, pub)) return bad("self-signature does not verify");
  const stored = structuredClone(rawKeys) as Json;
  // Synapse rebuilds `unsigned` from the display name it stored
  // (end_to_end_keys.py `get_e2e_device_keys_for_cs_api`); do the same so nothing else in
  // the remote's unsigned section reaches clients. Dendrite puts the name in the top-level
  // field too, falling back to keys.unsigned, which is also our fallback.
  const unsigned = stored.unsigned;
  const fallback =
    typeof unsigned === "object" && unsigned !== null ? (unsigned as Json).device_display_name : undefined;
  delete stored.unsigned;
  const name = typeof entry.output.device_display_name === "string" ? entry.output.device_display_name : fallback;
  if (typeof name === "string") stored.unsigned = { device_display_name: name };
  return { ok: true, value: { id, keys: stored } };
}

/**
 * A cross-signing key (client-server API §Cross-signing): the target's, with the expected
 * usage, and exactly one key whose id is "ed25519:" + the key itself — the same rule as
 * Synapse's `get_verify_key_from_cross_signing_key` (synapse/types/__init__.py).
 */
function checkCrossSigningKey(raw: unknown, target: string, usage: string): Checked<{ key: Json; pub: string }> {
  const parsed = v.safeParse(CrossSigningKey, raw);
  if (!parsed.success) return { ok: false, why: `wrong shape (${shapeProblem(parsed.issues)})` };
  const k = parsed.output;
  if (k.user_id !== target) return { ok: false, why: `user_id is ${k.user_id}` };
  if (!k.usage.includes(usage)) return { ok: false, why: `usage ${JSON.stringify(k.usage)} lacks "${usage}"` };
  const entries = Object.entries(k.keys);
  if (entries.length !== 1) return { ok: false, why: `has ${entries.length} keys, not exactly one` };
  const [id, pub] = entries[0]!;
  if (id !== `ed25519:${pub}`) return { ok: false, why: `key id ${id} does not match its key` };
  let length = -1;
  try {
    length = decodeBase64(pub).length;
  } catch {
    // reported below
  }
  if (length !== 32) return { ok: false, why: "not a 32-byte ed25519 key" };
  return { ok: true, value: { key: structuredClone(raw) as Json, pub } };
}

/**
 * Validate an answer about `target`. Throws FederationError("invalid") when the answer as a
 * whole cannot be used; otherwise returns the snapshot of everything that verified.
 * A user-signing key in the answer is ignored: it is only ever its owner's business and
 * Synapse never sends one over federation.
 */
export function validateUserDevices(body: unknown, target: string, fetchedAt: number): ValidatedDevices {
  const top = v.safeParse(Answer, body);
  if (!top.success) {
    throw new FederationError(
      "invalid",
      `device list answer for ${target} has the wrong shape (${shapeProblem(top.issues)})`,
    );
  }
  const answer = top.output;
  if (answer.user_id !== target) {
    throw new FederationError("invalid", `device list answer for ${target} is about ${answer.user_id}`);
  }
  if (answer.devices.length > MAX_DEVICES) {
    throw new FederationError(
      "invalid",
      `device list answer for ${target} has ${answer.devices.length} devices (more than ${MAX_DEVICES})`,
    );
  }

  const dropped: DroppedParts = { devices: 0, masterKey: false, selfSigningKey: false, parts: [], unlisted: 0 };
  const note = (p: DroppedPart): void => {
    if (dropped.parts.length < MAX_DESCRIBED) dropped.parts.push(p);
    else dropped.unlisted++;
  };

  const devices = new Map<string, Json>();
  const invalid = new Set<string>();
  for (const raw of answer.devices) {
    const checked = checkDevice(raw, target);
    if (!checked.ok) {
      dropped.devices++;
      if (checked.id === undefined) note({ part: "device", reason: checked.why });
      else {
        note({ part: "device", deviceId: checked.id, reason: checked.why });
        invalid.add(checked.id);
      }
    } else if (devices.has(checked.value.id)) {
      dropped.devices++;
      note({ part: "device", deviceId: checked.value.id, reason: "listed more than once" });
    } else if (checked.value.keys) {
      devices.set(checked.value.id, checked.value.keys);
    }
  }
  // An id that verified in another entry of the same answer is not invalid.
  for (const id of devices.keys()) invalid.delete(id);

  let masterKey: Json | undefined;
  let masterPub: string | undefined;
  if (answer.master_key !== undefined && answer.master_key !== null) {
    const m = checkCrossSigningKey(answer.master_key, target, "master");
    if (m.ok) {
      masterKey = m.value.key;
      masterPub = m.value.pub;
    } else {
      dropped.masterKey = true;
      note({ part: "master_key", reason: m.why });
    }
  }

  let selfSigningKey: Json | undefined;
  if (answer.self_signing_key !== undefined && answer.self_signing_key !== null) {
    const s = checkCrossSigningKey(answer.self_signing_key, target, "self_signing");
    // The self-signing key is only trusted through the master key's signature on it
    // (client-server API §Cross-signing); without a valid master key it proves nothing.
    let why: string | undefined;
    if (!s.ok) why = s.why;
    else if (masterPub === undefined) why = "no valid master key to check it against";
    else if (!verifyJsonSignature(answer.self_signing_key, target, `ed25519:${masterPub}`, masterPub)) {
      why = "not signed by the master key";
    }
    if (why !== undefined || !s.ok) {
      dropped.selfSigningKey = true;
      note({ part: "self_signing_key", reason: why ?? "rejected" });
    } else selfSigningKey = s.value.key;
  }

  const snapshot: DeviceSnapshot = {
    userId: target,
    streamId: answer.stream_id,
    // fromEntries defines own properties, so a device id such as "__proto__" stays data.
    devices: Object.fromEntries(devices),
    fetchedAt,
  };
  if (invalid.size > 0) snapshot.invalidDevices = [...invalid];
  if (masterKey) snapshot.masterKey = masterKey;
  if (selfSigningKey) snapshot.selfSigningKey = selfSigningKey;
  const remoteEmpty = answer.devices.length === 0 && answer.master_key == null && answer.self_signing_key == null;
  return { snapshot, dropped, remoteEmpty };
}
