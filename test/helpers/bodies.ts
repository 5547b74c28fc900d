// Realistic response bodies for delivery tests: an incremental /sync of a chosen size and a
// /keys/query answer with properly SHAPED keys (client-server API end_to_end_encryption).
// Signatures and keys are deterministic dummies (hashes), not real Ed25519: these helpers
// serve pure JSON transforms that do no crypto. Same inputs -> same bodies.

import { createHash } from "node:crypto";
import type { DeviceSnapshot } from "../../src/matrix/device.ts";

type Json = Record<string, unknown>;

/** Unpadded standard base64 of `bytes` bytes derived from `parts` (stands in for a key or signature). */
export function fakeB64(bytes: number, ...parts: (string | number)[]): string {
  let out = Buffer.alloc(0);
  for (let i = 0; out.length < bytes; i++) {
    out = Buffer.concat([
      out,
      createHash("sha256")
        .update(`${i}|${parts.join("|")}`)
        .digest(),
    ]);
  }
  return out.subarray(0, bytes).toString("base64").replace(/=+$/, "");
}

/** A Synapse-style device id: 10 upper-case letters. */
export function deviceIdOf(userId: string, index: number): string {
  const h = createHash("sha256").update(`${userId}#${index}`).digest();
  return Array.from(h.subarray(0, 10), (b) => String.fromCharCode(65 + (b % 26))).join("");
}

export function deviceIdsOf(userId: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => deviceIdOf(userId, i));
}

/** `generation` changes the key material (a re-created device keeps its id, gets new keys). */
export function deviceKeys(userId: string, deviceId: string, generation = 0, displayName?: string): Json {
  const ed = fakeB64(32, "ed25519", userId, deviceId, generation);
  const dev: Json = {
    user_id: userId,
    device_id: deviceId,
    algorithms: ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
    keys: {
      [`curve25519:${deviceId}`]: fakeB64(32, "curve25519", userId, deviceId, generation),
      [`ed25519:${deviceId}`]: ed,
    },
    signatures: {
      [userId]: {
        [`ed25519:${deviceId}`]: fakeB64(64, "self-sig", userId, deviceId, generation),
        [`ed25519:${selfSigningPub(userId, generation)}`]: fakeB64(64, "ssk-sig", userId, deviceId, generation),
      },
    },
  };
  if (displayName !== undefined) dev.unsigned = { device_display_name: displayName };
  return dev;
}

function masterPub(userId: string, generation: number): string {
  return fakeB64(32, "master", userId, generation);
}

function selfSigningPub(userId: string, generation: number): string {
  return fakeB64(32, "self_signing", userId, generation);
}

/** CrossSigningKeys: one `ed25519:<pub>: <pub>` entry, usage, the SSK signed by the master key. */
export function crossSigningKeys(userId: string, generation = 0): { master: Json; selfSigning: Json } {
  const mpub = masterPub(userId, generation);
  const spub = selfSigningPub(userId, generation);
  return {
    master: {
      user_id: userId,
      usage: ["master"],
      keys: { [`ed25519:${mpub}`]: mpub },
      signatures: { [userId]: { [`ed25519:${deviceIdOf(userId, 0)}`]: fakeB64(64, "msk-sig", userId, generation) } },
    },
    selfSigning: {
      user_id: userId,
      usage: ["self_signing"],
      keys: { [`ed25519:${spub}`]: spub },
      signatures: { [userId]: { [`ed25519:${mpub}`]: fakeB64(64, "ssk-by-msk", userId, generation) } },
    },
  };
}

export interface KeysOpts {
  /** Key material generation (default 0). */
  generation?: number;
  /** Give devices `unsigned.device_display_name` (default true). */
  displayNames?: boolean;
  /** Include master and self-signing keys (default true). */
  crossSigning?: boolean;
}

function devicesOf(userId: string, ids: readonly string[], o: KeysOpts): Record<string, Json> {
  const out: Record<string, Json> = {};
  for (const id of ids) {
    const name = o.displayNames === false ? undefined : `${userId.slice(1, userId.indexOf(":"))}'s phone ${id}`;
    out[id] = deviceKeys(userId, id, o.generation ?? 0, name);
  }
  return out;
}

/** A /keys/query answer for `users`, as a homeserver would send it. */
export function keysQueryAnswer(
  users: readonly string[],
  devicesPerUser: number | Readonly<Record<string, number>>,
  opts: KeysOpts = {},
): Json {
  const answer = {
    device_keys: {} as Json,
    master_keys: {} as Json,
    self_signing_keys: {} as Json,
    user_signing_keys: {} as Json,
    failures: {} as Json,
  };
  for (const u of users) {
    const n = typeof devicesPerUser === "number" ? devicesPerUser : (devicesPerUser[u] ?? 0);
    answer.device_keys[u] = devicesOf(u, deviceIdsOf(u, n), opts);
    if (opts.crossSigning !== false) {
      const cs = crossSigningKeys(u, opts.generation ?? 0);
      answer.master_keys[u] = cs.master;
      answer.self_signing_keys[u] = cs.selfSigning;
    }
  }
  return answer;
}

/** A fresh federation snapshot of `userId` with `devices` (a count or explicit ids). */
export function snapshotFor(
  userId: string,
  devices: number | readonly string[],
  opts: KeysOpts & { streamId?: number; fetchedAt?: number } = {},
): DeviceSnapshot {
  const ids = typeof devices === "number" ? deviceIdsOf(userId, devices) : devices;
  const snap: DeviceSnapshot = {
    userId,
    streamId: opts.streamId ?? 7,
    devices: devicesOf(userId, ids, { ...opts, displayNames: opts.displayNames ?? false }),
    fetchedAt: opts.fetchedAt ?? 1_700_000_000_000,
  };
  if (opts.crossSigning !== false) {
    const cs = crossSigningKeys(userId, opts.generation ?? 0);
    snap.masterKey = cs.master;
    snap.selfSigningKey = cs.selfSigning;
  }
  return snap;
}

// ---- incremental /sync (client-server API "GET /sync", as Synapse encodes it) ----

export interface SyncBodyOpts {
  /** The homeserver's own device_lists (omitted when both are empty, as Synapse does). */
  changed?: string[];
  left?: string[];
  nextBatch?: string;
  /** Timeline events per room (default 40). */
  eventsPerRoom?: number;
  seed?: number;
}

const WORDS = [
  "the",
  "keys",
  "rotate",
  "déjà",
  "vu",
  "ok 👍",
  "meeting",
  "at",
  "noon",
  "日本語",
  "resync",
  "device",
  "list",
  "federation",
  "why",
  "is",
  "this",
  "stale?",
];

/** A seeded xorshift: deterministic filler without hashing every word. */
function rng(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

function syncRoom(r: number, events: number, rand: () => number): { id: string; room: Json } {
  const roomId = `!${fakeB64(12, "room", r).replace(/[+/]/g, "x")}:example.org`;
  const users = Array.from(
    { length: 6 },
    (_, i) => `@user${(r * 7 + i) % 500}:${i % 2 ? "remote.test" : "example.org"}`,
  );
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)] as T;
  const ts = 1_700_000_000_000 + r * 100_000;
  const timeline = Array.from({ length: events }, (_, i) => {
    const base = {
      sender: pick(users),
      event_id: `$${fakeB64(32, "ev", r, i).replace(/[+/]/g, "_")}`,
      origin_server_ts: ts + i,
      unsigned: { age: 1000 + i },
    };
    if (i % 3 === 2) {
      const ciphertext = fakeB64(180 + Math.floor(rand() * 300), "ct", r, i);
      return {
        ...base,
        type: "m.room.encrypted",
        content: {
          algorithm: "m.megolm.v1.aes-sha2",
          ciphertext,
          device_id: deviceIdOf(base.sender, 0),
          sender_key: fakeB64(32, "sk", base.sender),
          session_id: fakeB64(32, "sess", r),
        },
      };
    }
    const body = Array.from({ length: 4 + Math.floor(rand() * 30) }, () => pick(WORDS)).join(" ");
    return { ...base, type: "m.room.message", content: { msgtype: "m.text", body, "m.mentions": {} } };
  });
  const state = users.slice(0, 2).map((u, i) => ({
    type: "m.room.member",
    state_key: u,
    sender: u,
    content: {
      membership: "join",
      displayname: u.slice(1, u.indexOf(":")),
      avatar_url: `mxc://example.org/${fakeB64(18, "av", u)}`,
    },
    event_id: `$${fakeB64(32, "st", r, i).replace(/[+/]/g, "_")}`,
    origin_server_ts: ts - 1000 + i,
    unsigned: { age: 90_000 },
  }));
  const last = timeline.at(-1)?.event_id ?? "$none";
  return {
    id: roomId,
    room: {
      timeline: { events: timeline, prev_batch: `t${r}-${ts}_0_0_0_0_0_0_0_0`, limited: false },
      state: { events: state },
      account_data: { events: [{ type: "m.fully_read", content: { event_id: last } }] },
      ephemeral: {
        events: [
          { type: "m.typing", content: { user_ids: users.slice(0, Math.floor(rand() * 2)) } },
          { type: "m.receipt", content: { [last]: { "m.read": { [pick(users)]: { ts: ts + events } } } } },
        ],
      },
      unread_notifications: { highlight_count: Math.floor(rand() * 2), notification_count: Math.floor(rand() * 20) },
      summary: {},
    },
  };
}

/** An incremental /sync body of about `targetBytes` UTF-8 bytes (within one room's size above). */
export function bigSyncBody(targetBytes: number, opts: SyncBodyOpts = {}): Json {
  const rand = rng(opts.seed ?? 42);
  const body: Json = {
    next_batch: opts.nextBatch ?? "s72595_4483_1934_1_340_1_82_1100_0_1",
    account_data: { events: [{ type: "m.push_rules", content: { global: { override: [], underride: [] } } }] },
    presence: {
      events: [
        {
          type: "m.presence",
          sender: "@user1:example.org",
          content: { presence: "online", last_active_ago: 2478593, currently_active: true },
        },
      ],
    },
    to_device: { events: [] },
    device_one_time_keys_count: { signed_curve25519: 50 },
    device_unused_fallback_key_types: ["signed_curve25519"],
  };
  const lists: Json = {};
  if (opts.changed?.length) lists.changed = [...opts.changed];
  if (opts.left?.length) lists.left = [...opts.left];
  if (Object.keys(lists).length > 0) body.device_lists = lists;
  const join: Json = {};
  body.rooms = { join };
  let size = Buffer.byteLength(JSON.stringify(body));
  for (let r = 0; size < targetBytes; r++) {
    const { id, room } = syncRoom(r, opts.eventsPerRoom ?? 40, rand);
    join[id] = room;
    size += Buffer.byteLength(JSON.stringify(id)) + Buffer.byteLength(JSON.stringify(room)) + 2;
  }
  return body;
}
