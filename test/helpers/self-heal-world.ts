// A world for the self-healing tests (test/integration/self-heal*.test.ts): the fake homeserver
// serves /keys/query from a FakeUser of its own (its possibly stale view of bob), and /sync with
// to-device events the test queues per access token. Over real sockets, through the proxy's real
// CLI flags. The set-up those files all repeated lives here; what a test checks stays in it.
import type { IncomingMessage, ServerResponse } from "node:http";
import { afterAll, beforeAll } from "vitest";
import { json, sample, scrape } from "../integration/ops-helpers.ts";
import { type FakeUser, makeUser } from "./fake-devices.ts";
import { startWorld, type World } from "./world.ts";

export interface HealWorld {
  w: World;
  /** What the homeserver serves for each remote user in /keys/query; absent: listed in failures. */
  hsUsers: Map<string, FakeUser>;
  /** Users the homeserver answers with a master key but no self-signing key. */
  noSelfSigning: Set<string>;
  /** Users the homeserver answers with a self-signing key but no master key. */
  noMaster: Set<string>;
  /**
   * Users the homeserver serves and whose server it lists in failures all the same, as Synapse
   * does when its resync of a stale cache fails and its direct query of that server then succeeds.
   */
  servedButFailed: Set<string>;
  /** To-device events the next /sync of a token carries (then cleared). */
  toDevice: Map<string, unknown[]>;
  /** Users the next /sync of a token names in device_lists.changed (then cleared). */
  changed: Map<string, string[]>;
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  /** The bodies each /sync answered, raw, by token. */
  syncBodies: Map<string, string[]>;
  keysQueries(): { token: string; users: string[] }[];
}

export function deviceMap(u: FakeUser): Record<string, unknown> {
  return Object.fromEntries(u.devices.map((d) => [d.device_id, d.keys]));
}

export async function startHealWorld(flags: string[] = []): Promise<HealWorld> {
  const w = await startWorld(["--metrics-listen", "127.0.0.1:0", "--refresh-cache-ms", "0", ...flags]);
  const hsUsers = new Map<string, FakeUser>();
  const noSelfSigning = new Set<string>();
  const noMaster = new Set<string>();
  const servedButFailed = new Set<string>();
  const toDevice = new Map<string, unknown[]>();
  const changed = new Map<string, string[]>();
  const syncBodies = new Map<string, string[]>();
  let batch = 0;
  const tokenOf = (req: IncomingMessage) => (req.headers.authorization ?? "").replace(/^Bearer /, "");

  w.hs.on("/_matrix/client/v3/keys/query", (_req: IncomingMessage, res: ServerResponse, body: Buffer) => {
    const requested = (JSON.parse(body.toString()) as { device_keys: Record<string, string[]> }).device_keys;
    const out = {
      device_keys: {} as Record<string, unknown>,
      master_keys: {} as Record<string, unknown>,
      self_signing_keys: {} as Record<string, unknown>,
      failures: {} as Record<string, unknown>,
    };
    for (const u of Object.keys(requested)) {
      const user = hsUsers.get(u);
      if (!user) {
        out.failures[u.slice(u.indexOf(":") + 1)] = { status: 503, message: "Not ready for retry" };
        continue;
      }
      out.device_keys[u] = deviceMap(user);
      if (servedButFailed.has(u))
        out.failures[u.slice(u.indexOf(":") + 1)] = { status: 503, message: `Device resync failed for '${u}'` };
      if (user.masterKey && !noMaster.has(u)) out.master_keys[u] = user.masterKey;
      if (user.selfSigningKey && !noSelfSigning.has(u)) out.self_signing_keys[u] = user.selfSigningKey;
    }
    json(res, 200, out);
  });
  w.hs.on("/_matrix/client/v3/sync", (req: IncomingMessage, res: ServerResponse) => {
    const token = tokenOf(req);
    const events = toDevice.get(token) ?? [];
    toDevice.delete(token);
    const lists = changed.get(token);
    changed.delete(token);
    const body = JSON.stringify({
      next_batch: `b${++batch}`,
      rooms: {},
      to_device: { events },
      ...(lists ? { device_lists: { changed: lists, left: [] } } : {}),
    });
    syncBodies.set(token, [...(syncBodies.get(token) ?? []), body]);
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
  return {
    w,
    hsUsers,
    noSelfSigning,
    noMaster,
    servedButFailed,
    toDevice,
    changed,
    syncBodies,
    metric: async (name, labels) => sample(await scrape(w.proxy.opsAddress!), name, labels),
    keysQueries: () =>
      w.hs.seen
        .filter((s) => s.target.includes("/keys/query"))
        .map((s) => ({
          token: String(s.headers.authorization ?? "").replace(/^Bearer /, ""),
          users: Object.keys((JSON.parse(s.body.toString() || "{}") as { device_keys?: object }).device_keys ?? {}),
        })),
  };
}

/**
 * A heal world for the enclosing describe block: started before its tests, closed after them.
 * The object returned is filled in by beforeAll, so tests read it as they read a HealWorld.
 */
export function useHealWorld(flags: string[]): HealWorld {
  const h = {} as HealWorld;
  beforeAll(async () => {
    Object.assign(h, await startHealWorld(flags));
  });
  afterAll(() => h.w.close());
  return h;
}

// One counter for every world of a file: each test's remote users are new to the proxy's store,
// its rate limits and its caches, whichever tests ran before it.
let n = 0;
export const fresh = (h: HealWorld, name: string) => `@${name}${++n}:${h.w.remote.serverName}`;

/** `u` with one more device, `deviceId`, keyed anew. */
export function withDevice(u: FakeUser, deviceId: string): FakeUser {
  return { ...u, devices: [...u.devices, makeUser(u.userId, { devices: [deviceId] }).devices[0]!] };
}

/**
 * A fresh remote user whom the homeserver lists with `devices`; the remote lists the same, plus
 * `added` if given: a device the homeserver never heard of, the staleness the proxy heals.
 */
export function remoteUser(
  h: HealWorld,
  name: string,
  devices: string[],
  added?: string,
): { id: string; hs: FakeUser; remote: FakeUser } {
  const id = fresh(h, name);
  const hs = makeUser(id, { devices });
  h.hsUsers.set(id, hs);
  const remote = added ? withDevice(hs, added) : hs;
  h.w.remote.setUser(remote);
  return { id, hs, remote };
}

/** A well-formed curve25519 key (unpadded base64 of 32 bytes of `fill`) that no device has. */
export const forgedKey = (fill: number) => Buffer.alloc(32, fill).toString("base64").replace(/=+$/, "");

export const api = (w: World, token: string, path: string, init: RequestInit = {}) =>
  fetch(w.proxy.url + path, {
    ...init,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...(init.headers ?? {}) },
  });

export async function sync(
  w: World,
  token: string,
  since = "s0",
): Promise<{ status: number; body: Record<string, unknown> & { device_lists?: { changed?: string[] } } }> {
  const r = await api(w, token, `/_matrix/client/v3/sync?timeout=0&since=${since}`);
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

export async function keysQuery(
  w: World,
  token: string,
  users: string[],
): Promise<Record<string, Record<string, Record<string, unknown>>>> {
  const r = await api(w, token, "/_matrix/client/v3/keys/query", {
    method: "POST",
    body: JSON.stringify({ device_keys: Object.fromEntries(users.map((u) => [u, []])) }),
  });
  return (await r.json()) as Record<string, Record<string, Record<string, unknown>>>;
}

/** An Olm to-device event from `sender`'s device with identity key `senderKey`. */
export function olmEvent(sender: string, senderKey: unknown): Record<string, unknown> {
  return {
    sender,
    type: "m.room.encrypted",
    content: {
      algorithm: "m.olm.v1.curve25519-aes-sha2",
      sender_key: senderKey,
      ciphertext: { someone: { type: 0, body: "opaque ciphertext" } },
    },
  };
}

export function curveKeyOf(u: FakeUser, deviceId: string): string {
  const d = u.devices.find((x) => x.device_id === deviceId)!;
  return (d.keys as { keys: Record<string, string> }).keys[`curve25519:${deviceId}`]!;
}
