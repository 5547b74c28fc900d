// Tell clients "re-query this user's keys" by adding the user to `device_lists.changed`
// (docs/architecture.md "Fresh data reaches clients two ways"). matrix-js-sdk and
// matrix-rust-sdk only re-fetch a tracked user's devices after a sync names them there, so this is what makes a refresh visible. Pure functions: no I/O.
//
// Where the lists live:
//   /sync (client-server API "GET /sync"):           body.device_lists.{changed,left}
//   simplified sliding sync (MSC4186, which takes the MSC3884 e2ee extension):
//                                                    body.extensions.e2ee.device_lists.{changed,left}
//   GET /keys/changes:                               body.{changed,left}

/** "sliding" = simplified MSC3575 (MSC4186) at /_matrix/client/unstable/org.matrix.simplified_msc3575/sync. */
export type SyncFlavour = "sync" | "sliding";

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** `parent[key]` as an object; with `create`, makes (or replaces a malformed) one. */
function child(parent: Json, key: string, create: boolean): Json | undefined {
  const v = parent[key];
  if (isObject(v)) return v;
  if (!create) return undefined;
  const made: Json = {};
  parent[key] = made;
  return made;
}

function deviceLists(body: Json, flavour: SyncFlavour, create: boolean): Json | undefined {
  if (flavour === "sync") return child(body, "device_lists", create);
  const ext = child(body, "extensions", create);
  const e2ee = ext && child(ext, "e2ee", create);
  return e2ee && child(e2ee, "device_lists", create);
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
}

/** Users of `users` (de-duplicated, order kept) that the homeserver does not list in `left`. */
function eligible(lists: Json | undefined, users: readonly string[]): string[] {
  // A user in `left` no longer shares an encrypted room with the requester: the client stops
  // tracking them, and naming them in `changed` too would contradict the homeserver.
  const left = new Set(strings(lists?.left));
  return [...new Set(users)].filter((u) => !left.has(u));
}

/**
 * Adds the eligible users to `lists.changed`, creating it as needed, without duplicating an
 * entry the homeserver already made. Returns the eligible users (added or already present).
 */
function addChanged(lists: Json, users: string[]): string[] {
  const changed: unknown[] = Array.isArray(lists.changed) ? lists.changed : [];
  const present = new Set(strings(changed));
  for (const u of users) if (!present.has(u)) changed.push(u);
  // Only `changed` is touched: `left` is optional (Synapse's /sync omits an empty one, ruma
  // defaults it), so a body without it stays valid.
  lists.changed = changed;
  return users;
}

/**
 * MUTATES `body` (a /sync or sliding sync response): adds `users` to device_lists.changed.
 * Returns the users the response now names as changed because of us (added or already there).
 */
export function injectChanged(body: Json, users: readonly string[], flavour: SyncFlavour): string[] {
  const todo = eligible(deviceLists(body, flavour, false), users);
  // Nothing to say: leave the body byte-for-byte as the homeserver sent it.
  if (todo.length === 0) return [];
  const lists = deviceLists(body, flavour, true);
  return lists ? addChanged(lists, todo) : [];
}

/**
 * The homeserver's own device_lists.changed (read it before injecting). A user the homeserver
 * itself reports has a newer list on the homeserver: the overlay for them can be dropped
 * (docs/architecture.md "Fresh data reaches clients two ways": "The overlay is dropped").
 */
export function reportedChanged(body: Json, flavour: SyncFlavour): string[] {
  return strings(deviceLists(body, flavour, false)?.changed);
}

/** MUTATES a GET /keys/changes answer `{changed, left}` the same way as injectChanged. */
export function keysChangesInject(body: Json, users: readonly string[]): string[] {
  const todo = eligible(body, users);
  return todo.length === 0 ? [] : addChanged(body, todo);
}

/**
 * A minimal valid response that ends a pending long-poll early, carrying only the injection.
 * The position is the request's own `since`/`pos`: nothing else happened, so the client's
 * next request resumes from the same point and loses nothing (the homeserver accepts the
 * token again: for sliding sync, Synapse keeps the connection position the client last used).
 *
 * Omitted on purpose: device_one_time_keys_count and device_unused_fallback_key_types. Absent
 * means "unchanged" for MSC3884, and matrix-rust-sdk (Account::update_key_counts) only updates
 * its counts when signed_curve25519 / the fallback list is present, so the client does not
 * conclude it has zero one-time keys and upload a new batch.
 *
 * Sliding shape: Synapse's SlidingSyncRestServlet.encode_response always emits `pos`, `rooms`
 * and `extensions` (lists only when non-empty); ruma's v5 Response requires only `pos` and
 * defaults `lists`, `rooms`, `extensions`; e2ee.device_lists is `{changed, left}` in both.
 */
export function wakeResponse(since: string, users: readonly string[], flavour: SyncFlavour): Json {
  const deviceLists = { changed: [...new Set(users)], left: [] };
  if (flavour === "sync") return { next_batch: since, device_lists: deviceLists };
  return { pos: since, lists: {}, rooms: {}, extensions: { e2ee: { device_lists: deviceLists } } };
}

/** What a streamed body's member (device_lists, or extensions) becomes (json/sync-splice.ts). */
export interface MemberRewrite {
  /** Its new JSON text; undefined when it stays as the homeserver sent it. */
  value: string | undefined;
  /** The homeserver's own `changed`, before we touched it. */
  reported: string[];
  /** Users now in `changed` (added, or already there). */
  added: string[];
}

/** `original`: the member's raw value; undefined when the body has none (it is then added). */
export function rewriteMember(
  original: Buffer | undefined,
  users: readonly string[],
  flavour: SyncFlavour,
): MemberRewrite | undefined {
  let value: unknown;
  if (original !== undefined) {
    try {
      value = JSON.parse(original.toString("utf8"));
    } catch {
      return undefined; // only a bad escape gets past the grammar: JSON.parse of the body fails too
    }
  }
  const key = flavour === "sync" ? "device_lists" : "extensions";
  const shell: Json = value === undefined ? {} : { [key]: value };
  // The last occurrence of a duplicated member is the one clients read (JSON.parse keeps it).
  const reported = reportedChanged(shell, flavour);
  const before = JSON.stringify(shell[key]);
  const added = injectChanged(shell, users, flavour);
  const after = JSON.stringify(shell[key]);
  return { value: after === before ? undefined : after, reported, added };
}
