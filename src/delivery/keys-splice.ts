// The /keys/query overlay (keys-overlay.ts) applied to the homeserver's answer as bytes: only
// the entries of overlaid users (`device_keys`, `master_keys`, `self_signing_keys`) and the
// `failures` member are parsed and re-encoded; every other byte goes out as the homeserver sent
// it. Parsing and re-serialising a whole 1000-device answer was most of an overlaid query's time
// (docs/performance.md, "Seventh session"). The result means what the whole-parse overlay's
// does; an answer of a shape this does not expect (a section missing or not an object, a
// key repeated where we read it) takes that whole-parse path instead.
import { LRUCache } from "lru-cache";
import type { DeviceSnapshot } from "../matrix/device.ts";
import { type Member, objectAt, skipWs } from "./json/members.ts";
import {
  copyForEncoding,
  crossCaughtUp,
  devicesCaughtUp,
  dropAnsweredFailures,
  freshDevices,
  type OverlayResult,
  overlayCrossSigning,
  overlayKeysQuery,
  wanted,
} from "./keys-overlay.ts";

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

export interface OverlaidAnswer extends OverlayResult {
  /** The answer to send; the homeserver's own bytes when it is not a JSON object. */
  body: Buffer;
  /**
   * The homeserver's own answer for the users `learnFor` named (their `device_keys`,
   * `master_keys` and `self_signing_keys` entries, and `failures`), parsed, when the overlay
   * parsed all of it anyway; undefined when learning would need a parse of its own.
   */
  homeserver?: Json;
}

/** Sets an own property even for the key "__proto__" (as keys-overlay.ts does). */
function put(o: Json, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

// A user's overlaid `device_keys` entry, kept for the next query: the homeserver repeats its
// stale answer until it catches up, and a 1000-device entry costs milliseconds to parse and
// encode. Valid while the snapshot (the same object: overlays.ts caches them), the devices asked
// for and the homeserver's bytes for that user are the same. A few per user and device list:
// clients differ in what the homeserver shows them of one user (display names, their own
// signatures), and one client's new answer must not push out another's.
interface Entry {
  snap: DeviceSnapshot;
  hs: Buffer;
  out: Buffer;
  devicesCaughtUp: boolean;
}
const CACHE_MIN_BYTES = 16 * 1024;
const PER_KEY = 4;
const entries = new LRUCache<string, Entry[]>({
  maxSize: 16 * 1024 * 1024,
  sizeCalculation: (es) => es.reduce((n, e) => n + e.hs.length + e.out.length, 1),
});

/** The entry for `key` and `snap` whose homeserver bytes `match` accepts, made the most recent. */
function lookup(key: string, snap: DeviceSnapshot, match: (hs: Buffer) => boolean): Entry | undefined {
  const es = entries.get(key);
  const hit = es?.find((e) => e.snap === snap && match(e.hs));
  if (hit && es![0] !== hit) entries.set(key, [hit, ...es!.filter((e) => e !== hit)]);
  return hit;
}

function keep(key: string, e: Entry): void {
  // Entries of an older snapshot of the user are of no further use.
  const rest = (entries.get(key) ?? []).filter((x) => x.snap === e.snap);
  entries.set(key, [e, ...rest].slice(0, PER_KEY));
}

/** The whole-parse overlay: the reference this file must agree with (test/unit/keys-splice.test.ts). */
export function overlayWhole(
  raw: Buffer,
  requested: Record<string, string[]>,
  snapshots: ReadonlyMap<string, DeviceSnapshot>,
): OverlaidAnswer {
  // The sections are copied shallowly before the overlay: it puts new entries in and drops
  // failures, and never changes the homeserver's own entries.
  const parts = (a: Json): Json => {
    const copy = (k: string) => (isObject(a[k]) ? { ...(a[k] as Json) } : undefined);
    return {
      device_keys: copy("device_keys"),
      master_keys: copy("master_keys"),
      self_signing_keys: copy("self_signing_keys"),
      failures: copy("failures"),
    };
  };
  let answer: unknown;
  try {
    answer = JSON.parse(raw.toString("utf8"));
  } catch {
    return { body: raw, overlaid: [], caughtUp: [] };
  }
  if (typeof answer !== "object" || answer === null || Array.isArray(answer))
    return { body: raw, overlaid: [], caughtUp: [] };
  const homeserver = parts(answer as Json);
  const r = overlayKeysQuery(answer as Json, requested, snapshots);
  return { body: Buffer.from(JSON.stringify(answer)), ...r, homeserver };
}

const SECTIONS = new Set(["device_keys", "master_keys", "self_signing_keys"]);

interface Edit {
  at: number;
  end: number;
  text: string | Buffer;
}

/** The overlay of `raw`, spliced where it can be, else through overlayWhole. */
export function overlayAnswer(
  raw: Buffer,
  requested: Record<string, string[]>,
  snapshots: ReadonlyMap<string, DeviceSnapshot>,
  learnFor: readonly string[] = [],
): OverlaidAnswer {
  return spliceAnswer(raw, requested, snapshots, learnFor) ?? overlayWhole(raw, requested, snapshots);
}

/** The overlay by bytes; undefined for an answer of a shape only the whole parse handles. */
export function spliceAnswer(
  raw: Buffer,
  requested: Record<string, string[]>,
  snapshots: ReadonlyMap<string, DeviceSnapshot>,
  learnFor: readonly string[] = [],
): OverlaidAnswer | undefined {
  try {
    return spliced(raw, requested, snapshots, learnFor);
  } catch {
    // Malformed or repeated where we read it: the whole parse decides (and relays what it
    // cannot read as it came).
    return undefined;
  }
}

/** One member of the top-level object by name; undefined when absent; throws when repeated. */
function only(members: Member[], key: string): Member | undefined {
  let found: Member | undefined;
  for (const m of members) {
    if (m.key !== key) continue;
    if (found) throw new Error(`${key} repeated`);
    found = m;
  }
  return found;
}

function parse(raw: Buffer, m: Member): unknown {
  return JSON.parse(raw.toString("utf8", m.valueStart, m.valueEnd));
}

function spliced(
  raw: Buffer,
  requested: Record<string, string[]>,
  snapshots: ReadonlyMap<string, DeviceSnapshot>,
  learnFor: readonly string[],
): OverlaidAnswer | undefined {
  const users = Object.keys(requested).filter((u) => snapshots.has(u));
  const wantedUsers = new Set(users);
  // An overlaid entry whose homeserver bytes we saw last time is not scanned again: the same
  // bytes from the same start end where they ended then (an object closes itself).
  const hits = new Map<string, { e: Entry; at: number }>();
  const known = (user: string, at: number): number | undefined => {
    if (!wantedUsers.has(user) || hits.has(user)) return undefined;
    const e = lookup(
      cacheKey(user, requested[user]),
      snapshots.get(user)!,
      (hs) => hs[0] === 0x7b && at + hs.length <= raw.length && raw.subarray(at, at + hs.length).equals(hs),
    );
    if (!e) return undefined;
    hits.set(user, { e, at });
    return at + e.hs.length;
  };
  const start = skipWs(raw, 0);
  const top = objectAt(raw, start, { into: SECTIONS, known });
  if (skipWs(raw, top.close + 1) !== raw.length) return undefined;
  const dkM = only(top.members, "device_keys");
  const mkM = only(top.members, "master_keys");
  const sskM = only(top.members, "self_signing_keys");
  const failM = only(top.members, "failures");
  // A section that is missing or not an object: the whole-parse path creates or replaces it.
  if (!dkM || raw[dkM.valueStart] !== 0x7b) return undefined;
  if (users.some((u) => snapshots.get(u)!.masterKey) && (!mkM || raw[mkM.valueStart] !== 0x7b)) return undefined;
  if (users.some((u) => snapshots.get(u)!.selfSigningKey) && (!sskM || raw[sskM.valueStart] !== 0x7b)) return undefined;
  const section = (m: Member | undefined) => {
    if (!m || raw[m.valueStart] !== 0x7b) return undefined;
    const span = m.inner!;
    const byUser = new Map<string, Member>();
    for (const e of span.members) {
      if (!wantedUsers.has(e.key)) continue;
      if (byUser.has(e.key)) throw new Error("user repeated");
      byUser.set(e.key, e);
    }
    return { span, byUser, added: 0 };
  };
  const dk = section(dkM)!;
  const mk = section(mkM);
  const ssk = section(sskM);
  // The overlaid users' parts of the answer, parsed: the overlay's functions run on this.
  const mini: Json = { device_keys: {}, master_keys: {}, self_signing_keys: {} };
  // The homeserver's own entries as parsed, kept apart from the overlay's changes to `mini`.
  const seen: Json = { device_keys: {}, master_keys: {}, self_signing_keys: {} };
  let seenAll = learnFor.every((u) => wantedUsers.has(u));
  for (const [name, sec] of [
    ["master_keys", mk],
    ["self_signing_keys", ssk],
  ] as const)
    for (const [u, m] of sec?.byUser ?? []) {
      const v = parse(raw, m);
      put(mini[name] as Json, u, v);
      put(seen[name] as Json, u, v);
    }
  const edits: Edit[] = [];
  const setEntry = (sec: NonNullable<ReturnType<typeof section>>, user: string, text: string | Buffer) => {
    const m = sec.byUser.get(user);
    if (m) return void edits.push({ at: m.valueStart, end: m.valueEnd, text });
    // Appended before the section's closing brace, as the whole-parse overlay appends a key.
    const comma = sec.span.members.length + sec.added++ > 0 ? "," : "";
    edits.push({ at: sec.span.close, end: sec.span.close, text: `${comma}${JSON.stringify(user)}:` });
    edits.push({ at: sec.span.close, end: sec.span.close, text });
  };

  const overlaid: string[] = [];
  const caught: string[] = [];
  for (const user of users) {
    const snap = snapshots.get(user)!;
    const ids = requested[user];
    const onlyIds = wanted(ids);
    const m = dk.byUser.get(user);
    const hit = hits.get(user);
    const got = hit && hit.at === m?.valueStart ? { e: hit.e } : devicesEntry(raw, m, snap, onlyIds, user, ids);
    const e = got.e;
    if (m && "old" in got) put(seen.device_keys as Json, user, got.old);
    else if (m) seenAll = false;
    if (!onlyIds && e.devicesCaughtUp && crossCaughtUp(mini, user, snap)) caught.push(user);
    setEntry(dk, user, e.out);
    for (const [name, sec, key] of [
      ["master_keys", mk, snap.masterKey],
      ["self_signing_keys", ssk, snap.selfSigningKey],
    ] as const) {
      if (!key || !sec) continue;
      overlayCrossSigning(mini, name, user, key);
      setEntry(sec, user, JSON.stringify((mini[name] as Json)[user]));
    }
    overlaid.push(user);
  }
  if (failM && raw[failM.valueStart] === 0x7b) {
    const failures = parse(raw, failM) as Json;
    seen.failures = { ...failures };
    const before = Object.keys(failures).length;
    dropAnsweredFailures({ failures }, requested, new Set(overlaid));
    if (Object.keys(failures).length !== before)
      edits.push({ at: failM.valueStart, end: failM.valueEnd, text: JSON.stringify(failures) });
  }
  const r: OverlaidAnswer = { body: applyEdits(raw, edits), overlaid, caughtUp: caught };
  if (seenAll && learnFor.length) r.homeserver = seen;
  return r;
}

const cacheKey = (user: string, ids: string[] | undefined) => `${user}\n${JSON.stringify(ids ?? null)}`;

/**
 * The overlaid `device_keys[user]`, encoded, from the cache when nothing it depends on changed;
 * with the homeserver's entry as parsed (`old`) when it was not.
 */
function devicesEntry(
  raw: Buffer,
  m: Member | undefined,
  snap: DeviceSnapshot,
  onlyIds: Set<string> | undefined,
  user: string,
  ids: string[] | undefined,
): { e: Entry; old?: unknown } {
  const hs = m ? raw.subarray(m.valueStart, m.valueEnd) : Buffer.alloc(0);
  const key = cacheKey(user, ids);
  const hit = lookup(key, snap, (x) => x.equals(hs));
  if (hit) return { e: hit };
  const old = m ? (JSON.parse(hs.toString("utf8")) as unknown) : undefined;
  const out = Buffer.from(JSON.stringify(freshDevices(snap, onlyIds, old, copyForEncoding)));
  // The caught-up test only counts for a request of every device (keys-overlay.ts).
  const e: Entry = { snap, hs: Buffer.from(hs), out, devicesCaughtUp: !onlyIds && devicesCaughtUp(old, snap) };
  if (hs.length + out.length >= CACHE_MIN_BYTES) keep(key, e);
  return { e, old };
}

function applyEdits(raw: Buffer, edits: Edit[]): Buffer {
  // Stable: two insertions at one offset keep their order.
  edits.sort((a, b) => a.at - b.at);
  const parts: Uint8Array[] = [];
  let at = 0;
  for (const e of edits) {
    parts.push(raw.subarray(at, e.at));
    parts.push(typeof e.text === "string" ? Buffer.from(e.text) : e.text);
    at = e.end;
  }
  parts.push(raw.subarray(at));
  return Buffer.concat(parts);
}
