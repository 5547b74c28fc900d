// The homeserver's view of a remote user: what it last served for them through us, in /keys/query
// answers (client-server API, end_to_end_encryption "POST /keys/query"). Only the parts that tell
// a real change apart: device ids, each device's `keys`, the master and self-signing public keys.
// Names, signatures by other users and `unsigned` are left out: a change there does not make a
// client trust or encrypt to a different set of keys (docs/architecture.md "Self-healing").
// Pure: no I/O.
import type { DeviceSnapshot, HsView } from "../matrix/device.ts";
import { digestsOf } from "./view-wire.ts";

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** A user's devices beyond this are not recorded (Synapse and we refuse more over federation). */
export const MAX_VIEW_DEVICES = 1000;
/** A key id or value longer than this is not a real one: the entry is left out. */
const MAX_KEY_CHARS = 255;

function keysOf(dev: unknown): Record<string, string> | undefined {
  if (!isObject(dev) || !isObject(dev.keys)) return undefined;
  const out: Record<string, string> = {};
  for (const id of Object.keys(dev.keys).sort()) {
    const v = dev.keys[id];
    if (typeof v !== "string" || id.length > MAX_KEY_CHARS || v.length > MAX_KEY_CHARS) continue;
    out[id] = v;
  }
  return out;
}

/** A cross-signing key's public keys, sorted and joined: equal strings, same key material. */
export function crossKeyOf(key: unknown): string | undefined {
  if (!isObject(key) || !isObject(key.keys)) return undefined;
  const vals = Object.values(key.keys).filter((v): v is string => typeof v === "string" && v.length <= MAX_KEY_CHARS);
  return vals.length ? vals.sort().join(",") : undefined;
}

function entry(answer: Json, section: string, user: string): unknown {
  const s = answer[section];
  return isObject(s) && Object.hasOwn(s, user) ? s[user] : undefined;
}

/**
 * The views a /keys/query answer shows, for the users requested with every device (`[]`): a
 * request for some device ids shows only part of the list. A user absent from `device_keys` (its
 * server failed, say) teaches nothing.
 */
export function viewsFromAnswer(
  answer: Json,
  requested: Record<string, string[]>,
  users: readonly string[],
  now: number,
): HsView[] {
  const out: HsView[] = [];
  const dk = answer.device_keys;
  if (!isObject(dk)) return out;
  for (const user of users) {
    if ((requested[user]?.length ?? 0) > 0 || !Object.hasOwn(dk, user)) continue;
    const devs = dk[user];
    if (!isObject(devs)) continue;
    const ids = Object.keys(devs);
    if (ids.length > MAX_VIEW_DEVICES) continue;
    const view: HsView = { userId: user, devices: {}, seenAt: now };
    for (const id of ids) {
      const k = keysOf(devs[id]);
      if (k && id.length <= MAX_KEY_CHARS)
        Object.defineProperty(view.devices, id, { value: k, enumerable: true, writable: true, configurable: true });
    }
    const mk = crossKeyOf(entry(answer, "master_keys", user));
    const ssk = crossKeyOf(entry(answer, "self_signing_keys", user));
    if (mk) view.master = mk;
    if (ssk) view.selfSigning = ssk;
    out.push(view);
  }
  return out;
}

/** A federation snapshot in the same shape, to compare with a view. */
export function viewOfSnapshot(s: DeviceSnapshot): HsView {
  const view: HsView = { userId: s.userId, devices: {}, seenAt: s.fetchedAt };
  for (const [id, dev] of Object.entries(s.devices)) {
    const k = keysOf(dev);
    if (k) Object.defineProperty(view.devices, id, { value: k, enumerable: true, writable: true, configurable: true });
  }
  const mk = crossKeyOf(s.masterKey);
  const ssk = crossKeyOf(s.selfSigningKey);
  if (mk) view.master = mk;
  if (ssk) view.selfSigning = ssk;
  return view;
}

export interface ViewDiff {
  added: string[];
  removed: string[];
  rekeyed: string[];
  masterChanged: boolean;
  selfSigningChanged: boolean;
}

const sameKeys = (a: Record<string, string>, b: Record<string, string>): boolean => {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
};

/**
 * What a fresh snapshot changes against what clients were shown. A device that failed validation
 * is not "removed" (the remote still lists it: the overlay shows the homeserver's copy), and a
 * cross-signing key the snapshot lacks is not a change (a federation answer that omits one is not
 * proof of deletion; the overlay leaves the homeserver's copy in place), as in keys-overlay.ts.
 */
export function diffView(shown: HsView, fresh: DeviceSnapshot): ViewDiff {
  const f = viewOfSnapshot(fresh);
  const invalid = new Set(fresh.invalidDevices ?? []);
  const d: ViewDiff = { added: [], removed: [], rekeyed: [], masterChanged: false, selfSigningChanged: false };
  for (const id of Object.keys(f.devices)) {
    if (!Object.hasOwn(shown.devices, id)) d.added.push(id);
    else if (!sameKeys(shown.devices[id]!, f.devices[id]!)) d.rekeyed.push(id);
  }
  for (const id of Object.keys(shown.devices))
    if (!Object.hasOwn(f.devices, id) && !invalid.has(id)) d.removed.push(id);
  d.masterChanged = f.master !== undefined && f.master !== shown.master;
  d.selfSigningChanged = f.selfSigning !== undefined && f.selfSigning !== shown.selfSigning;
  return d;
}

export function isEmptyDiff(d: ViewDiff): boolean {
  return !d.added.length && !d.removed.length && !d.rekeyed.length && !d.masterChanged && !d.selfSigningChanged;
}

/** "+1 device ABCD, -1 device EFGH, new master key": device ids cut, at most 5 named per kind. */
export function describeDiff(d: ViewDiff): string {
  const ids = (a: string[]) =>
    a
      .slice(0, 5)
      .map((x) => (x.length > 40 ? `${x.slice(0, 40)}…` : x))
      .join(" ") + (a.length > 5 ? " …" : "");
  const parts: string[] = [];
  const plural = (n: number) => (n === 1 ? "device" : "devices");
  if (d.added.length) parts.push(`+${d.added.length} ${plural(d.added.length)} ${ids(d.added)}`);
  if (d.removed.length) parts.push(`-${d.removed.length} ${plural(d.removed.length)} ${ids(d.removed)}`);
  if (d.rekeyed.length) parts.push(`${d.rekeyed.length} ${plural(d.rekeyed.length)} re-keyed ${ids(d.rekeyed)}`);
  if (d.masterChanged) parts.push("new master key");
  if (d.selfSigningChanged) parts.push("new self-signing key");
  return parts.join(", ");
}

/** True when the two views name the same devices, keys and cross-signing keys. */
export function sameView(a: HsView, b: HsView): boolean {
  // Two views read in the reading thread: their digests say it without decoding either.
  const d = digestsOf(a, b);
  if (d) return d[0] === d[1];
  if (a.master !== b.master || a.selfSigning !== b.selfSigning) return false;
  const ids = Object.keys(a.devices);
  if (ids.length !== Object.keys(b.devices).length) return false;
  return ids.every((id) => Object.hasOwn(b.devices, id) && sameKeys(a.devices[id]!, b.devices[id]!));
}

/** Does any device of the view hold this curve25519 identity key? */
export function knowsCurveKey(v: HsView, senderKey: string): boolean {
  for (const keys of Object.values(v.devices)) {
    for (const [id, val] of Object.entries(keys)) if (val === senderKey && id.startsWith("curve25519:")) return true;
  }
  return false;
}

export function knowsDevice(v: HsView, deviceId: string): boolean {
  return Object.hasOwn(v.devices, deviceId);
}
