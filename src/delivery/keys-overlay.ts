// POST /_matrix/client/v3/keys/query: replace the homeserver's (possibly stale) answer for
// users we hold a fresh federation snapshot of (docs/architecture.md "Fresh data reaches
// clients two ways"). Pure: no I/O, the caller parses the body, calls this, and re-serialises.
//
// Shapes (client-server API, end_to_end_encryption "POST /keys/query"):
//   device_keys[user][device] = DeviceKeys + unsigned.device_display_name
//   master_keys[user], self_signing_keys[user] = CrossSigningKey
//   user_signing_keys = only the requester's own
//   failures[server] = why that server could not be reached

import type { DeviceSnapshot } from "../matrix/device.ts";
import { serverOf } from "../matrix/user-id.ts";

export interface OverlayResult {
  /** Users whose answer we replaced. */
  overlaid: string[];
  /** Users whose homeserver answer already equals the snapshot: the overlay can be dropped. */
  caughtUp: string[];
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Sets an own property even for the key "__proto__" (JSON.parse creates such keys as own data
 * properties, a plain assignment would instead replace the prototype and lose the entry).
 */
function put(o: Json, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

/**
 * A deep copy of a JSON value. structuredClone does the same at several times the cost, which
 * for 1000 devices was most of an overlaid /keys/query's time (docs/performance.md).
 */
function cloneJson<T>(v: T): T {
  if (Array.isArray(v)) return v.map(cloneJson) as T;
  if (v === null || typeof v !== "object") return v;
  const out: Json = {};
  for (const k of Object.keys(v)) {
    const c = cloneJson((v as Json)[k]);
    if (k === "__proto__") put(out, k, c);
    else out[k] = c;
  }
  return out as T;
}

/** Structural JSON equality; object key order does not matter (it carries no meaning in JSON). */
function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((x, i) => sameJson(x, b[i]));
  }
  if (!isObject(a) || !isObject(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => Object.hasOwn(b, k) && sameJson(a[k], b[k]));
}

/** Returns `answer[key]` as an object, creating (or replacing a malformed) one. */
function section(answer: Json, key: string): Json {
  const v = answer[key];
  if (isObject(v)) return v;
  const created: Json = {};
  answer[key] = created;
  return created;
}

/** True when a and b carry the same key material: `keys` equal, signatures/unsigned ignored. */
function sameKeys(a: unknown, b: unknown): boolean {
  return isObject(a) && isObject(b) && isObject(a.keys) && sameJson(a.keys, b.keys);
}

/**
 * Copies into `fresh` the signatures `old` carries that `fresh` lacks. Only called when the key
 * material is unchanged: the homeserver's copy then holds signatures made by other users (the
 * requester's user-signing key over a master key, i.e. "I verified this person"), which the
 * federation answer never carries because the target's server does not know about them.
 * A signature under the same key id is NOT replaced: the fresh one is the owner's own.
 */
function keepOldSignatures(fresh: Json, old: Json): void {
  if (!isObject(old.signatures)) return;
  const sigs: Json = isObject(fresh.signatures) ? fresh.signatures : {};
  for (const [entity, byKey] of Object.entries(old.signatures)) {
    if (!isObject(byKey)) continue;
    const own = Object.hasOwn(sigs, entity) ? sigs[entity] : undefined;
    const mine: Json = isObject(own) ? own : {};
    for (const [keyId, sig] of Object.entries(byKey)) {
      if (!Object.hasOwn(mine, keyId)) put(mine, keyId, sig);
    }
    put(sigs, entity, mine);
  }
  fresh.signatures = sigs;
}

/** A requested device list of [] (or a malformed one) means "all devices" (spec: "an empty list indicates all devices"). */
export function wanted(ids: unknown): Set<string> | undefined {
  if (!Array.isArray(ids) || ids.length === 0) return undefined;
  return new Set(ids.filter((x): x is string => typeof x === "string"));
}

/**
 * A snapshot device's copy for an answer that is serialised at once and never changed after
 * (keys-splice.ts): only the parts freshDevices changes (`unsigned`, `signatures`) are copied,
 * the rest is shared with the snapshot. A deep copy of 1000 devices cost more than a
 * millisecond.
 */
export function copyForEncoding(dev: unknown): Json {
  const d = dev as Json;
  const out: Json = { ...d };
  if (isObject(d.unsigned)) out.unsigned = { ...d.unsigned };
  if (isObject(d.signatures)) out.signatures = cloneJson(d.signatures);
  return out;
}

/** `copy`: how a snapshot's device is copied before it is changed (default: deeply). */
export function freshDevices(
  snap: DeviceSnapshot,
  only: Set<string> | undefined,
  old: unknown,
  copy: (dev: unknown) => Json = (dev) => cloneJson(dev) as Json,
): Json {
  const hs: Json = isObject(old) ? old : {};
  const out: Json = {};
  for (const [id, dev] of Object.entries(snap.devices)) {
    if (only && !only.has(id)) continue;
    // Copied: the snapshot may be shared (cache) and the answer is mutated further downstream.
    const fresh = copy(dev);
    const hsDev = Object.hasOwn(hs, id) ? hs[id] : undefined;
    if (isObject(hsDev)) {
      // The homeserver's display name is the one the user set and the homeserver is allowed to
      // show (Synapse hides remote names over federation by default:
      // allow_device_name_lookup_over_federation); keep the snapshot's only when it has none.
      const hsName = isObject(hsDev.unsigned) ? hsDev.unsigned.device_display_name : undefined;
      if (typeof hsName === "string") {
        const unsigned: Json = isObject(fresh.unsigned) ? fresh.unsigned : {};
        unsigned.device_display_name = hsName;
        fresh.unsigned = unsigned;
      }
      if (sameKeys(hsDev, fresh)) keepOldSignatures(fresh, hsDev);
    }
    put(out, id, fresh);
  }
  keepHomeserverCopies(out, snap, only, hs);
  return out;
}

/**
 * A device the remote listed but whose entry failed validation (say a strict remote rebuilt its
 * keys without a signed field it does not know, such as `"dehydrated": true`, so the
 * self-signature no longer verifies) proves nothing either way: the remote still lists it. So
 * the homeserver's copy of it is shown as is, rather than hiding a device the homeserver lists
 * correctly; one the homeserver does not have is new and unverifiable, and stays out.
 */
function keepHomeserverCopies(out: Json, snap: DeviceSnapshot, only: Set<string> | undefined, hs: Json): void {
  for (const id of snap.invalidDevices ?? []) {
    if ((only && !only.has(id)) || Object.hasOwn(out, id) || !Object.hasOwn(hs, id)) continue;
    const hsDev = hs[id];
    if (isObject(hsDev)) put(out, id, hsDev);
  }
}

export function overlayCrossSigning(answer: Json, key: string, user: string, fresh: Json | undefined): void {
  // A snapshot without this key leaves the homeserver's copy alone: a federation answer that
  // omits a cross-signing key is not proof that the user deleted it (Synapse sends null when it
  // has none cached, older servers omit the field), and dropping a key the requester verified
  // would silently downgrade trust. A real reset arrives as a NEW key, which does replace it.
  if (!fresh) return;
  const target = section(answer, key);
  const copy = cloneJson(fresh);
  const old = Object.hasOwn(target, user) ? target[user] : undefined;
  if (isObject(old) && sameKeys(old, copy)) keepOldSignatures(copy, old);
  put(target, user, copy);
}

/**
 * True when the homeserver's own answer for `user` already equals the snapshot: the same
 * device ids with the same `keys` (devicesCaughtUp), and the same master/self-signing key
 * material (crossCaughtUp). A key the snapshot lacks is not compared: the overlay leaves the
 * homeserver's copy in place anyway. Neither is a device that failed validation: the overlay
 * shows the homeserver's copy of it (or none), so whether the homeserver lists it changes
 * nothing the overlay would show.
 */
function caughtUp(answer: Json, user: string, snap: DeviceSnapshot): boolean {
  const dk = answer.device_keys;
  const hs = isObject(dk) && Object.hasOwn(dk, user) ? dk[user] : undefined;
  return devicesCaughtUp(hs, snap) && crossCaughtUp(answer, user, snap);
}

/** `hs`: the homeserver's `device_keys[user]`. */
export function devicesCaughtUp(hs: unknown, snap: DeviceSnapshot): boolean {
  if (!isObject(hs)) return false;
  const ids = Object.keys(snap.devices);
  if (!snap.invalidDevices?.length) {
    if (Object.keys(hs).length !== ids.length) return false;
  } else {
    const invalid = new Set(snap.invalidDevices);
    for (const id of Object.keys(hs)) {
      if (!Object.hasOwn(snap.devices, id) && !invalid.has(id)) return false;
    }
  }
  for (const id of ids) {
    if (!Object.hasOwn(hs, id) || !sameKeys(hs[id], snap.devices[id])) return false;
  }
  return true;
}

export function crossCaughtUp(answer: Json, user: string, snap: DeviceSnapshot): boolean {
  for (const [key, fresh] of [
    ["master_keys", snap.masterKey],
    ["self_signing_keys", snap.selfSigningKey],
  ] as const) {
    if (!fresh) continue;
    const sec = answer[key];
    if (!isObject(sec) || !Object.hasOwn(sec, user) || !sameKeys(sec[user], fresh)) return false;
  }
  return true;
}

/** Rewrites `answer` (MUTATED in place) with the snapshots of the requested users. */
export function overlayKeysQuery(
  answer: Json,
  requested: Record<string, string[]>,
  snapshots: ReadonlyMap<string, DeviceSnapshot>,
): OverlayResult {
  const overlaid: string[] = [];
  const caught: string[] = [];
  for (const [user, ids] of Object.entries(requested)) {
    const snap = snapshots.get(user);
    if (!snap) continue;
    const only = wanted(ids);
    // Only a request for all devices can show that the homeserver's whole list caught up.
    if (!only && caughtUp(answer, user, snap)) caught.push(user);
    const deviceKeys = section(answer, "device_keys");
    const old = Object.hasOwn(deviceKeys, user) ? deviceKeys[user] : undefined;
    put(deviceKeys, user, freshDevices(snap, only, old));
    overlayCrossSigning(answer, "master_keys", user, snap.masterKey);
    overlayCrossSigning(answer, "self_signing_keys", user, snap.selfSigningKey);
    // user_signing_keys is deliberately never touched: the spec returns only the requester's
    // own there, and federation never carries another user's user-signing key.
    overlaid.push(user);
  }
  dropAnsweredFailures(answer, requested, new Set(overlaid));
  return { overlaid, caughtUp: caught };
}

/**
 * A server's failure entry tells the client "these users' keys may be missing". Remove it only
 * when we answered for EVERY requested user of that server; one user left without data keeps it.
 */
export function dropAnsweredFailures(answer: Json, requested: Record<string, string[]>, done: Set<string>): void {
  const failures = answer.failures;
  if (!isObject(failures) || done.size === 0) return;
  const pending = new Map<string, boolean>();
  for (const user of Object.keys(requested)) {
    const server = serverOf(user);
    pending.set(server, (pending.get(server) ?? false) || !done.has(user));
  }
  for (const server of Object.keys(failures)) {
    if (pending.get(server) === false) delete failures[server];
  }
}
