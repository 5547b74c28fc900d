import type { IncomingMessage, ServerResponse } from "node:http";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { bigSyncBody } from "../helpers/bodies.ts";
import { type FakeUser, makeUser } from "../helpers/fake-devices.ts";
import { startWorld, type World } from "../helpers/world.ts";

let w: World;
let bobUser: FakeUser;
const bob = () => bobUser.userId;

// The homeserver's stale view of bob: only DEV0, named "Old phone", with a master key that alice
// has verified (her signature on it). The remote really has DEV0 and DEV1.
function staleKeysAnswer(requested: Record<string, string[]>): Record<string, unknown> {
  const dev0 = structuredClone(bobUser.devices[0]!.keys!) as Record<string, unknown>;
  dev0.unsigned = { device_display_name: "Old phone" };
  const master = structuredClone(bobUser.masterKey!) as { signatures?: Record<string, unknown> };
  master.signatures = { ...master.signatures, "@alice:hs.test": { "ed25519:ALICEMSK": "alice-signature" } };
  const out: Record<string, Record<string, unknown>> = {
    device_keys: {},
    master_keys: {},
    self_signing_keys: {},
    user_signing_keys: {},
    failures: {},
  };
  for (const u of Object.keys(requested)) {
    if (u === bob()) {
      out.device_keys![u] = { DEV0: dev0 };
      out.master_keys![u] = master;
      out.self_signing_keys![u] = bobUser.selfSigningKey;
      out.failures![w.remote.serverName] = { status: 503, message: "Not ready for retry" };
    } else {
      out.device_keys![u] = {
        CAROLDEV: {
          user_id: u,
          device_id: "CAROLDEV",
          algorithms: [],
          keys: { "ed25519:CAROLDEV": "c" },
          signatures: {},
        },
      };
    }
  }
  out.user_signing_keys!["@alice:hs.test"] = {
    user_id: "@alice:hs.test",
    usage: ["user_signing"],
    keys: { "ed25519:U": "U" },
  };
  return out;
}

let syncCount = 0;
let hsChanged: string[] = [];
function serveSync(req: IncomingMessage, res: ServerResponse): void {
  const q = new URL(req.url!, "http://x").searchParams;
  const timeout = Number(q.get("timeout") ?? 0);
  const answer = () => {
    if (res.writableEnded || res.destroyed) return;
    const body = JSON.stringify({
      next_batch: `s${++syncCount}`,
      rooms: {},
      ...(hsChanged.length ? { device_lists: { changed: hsChanged, left: [] } } : {}),
    });
    hsChanged = [];
    res.writeHead(200, { "content-type": "application/json" });
    res.end(body);
  };
  if (timeout > 0) setTimeout(answer, timeout);
  else answer();
}

const api = (token: string, path: string, init: RequestInit = {}) =>
  fetch(w.proxy.url + path, {
    ...init,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...(init.headers ?? {}) },
  });
const sync = async (token: string, since?: string, timeout = 0) =>
  (await api(token, `/_matrix/client/v3/sync?timeout=${timeout}${since ? `&since=${since}` : ""}`)).json();
const keysQuery = async (token: string, deviceKeys: Record<string, string[]>) =>
  (
    await api(token, "/_matrix/client/v3/keys/query", {
      method: "POST",
      body: JSON.stringify({ device_keys: deviceKeys }),
    })
  ).json();

let alice: string;
let alice2: string;
let carol: string;

beforeAll(async () => {
  w = await startWorld(["--refresh-cache-ms", "0", "--rate-target-burst", "100"]);
  bobUser = makeUser(`@bob:${w.remote.serverName}`, {
    devices: ["DEV0", "DEV1"],
    displayNames: { DEV0: "Remote name 0", DEV1: "New laptop" },
  });
  w.remote.setUser(bobUser);
  w.hs.on("/_matrix/client/v3/keys/query", (_req, res, body) => {
    const answer = JSON.stringify(staleKeysAnswer(JSON.parse(body.toString()).device_keys));
    res.writeHead(200, { "content-type": "application/json" });
    res.end(answer);
  });
  w.hs.on("/_matrix/client/v3/sync", (req, res) => serveSync(req, res));
  alice = w.login("alice", "ALICE1");
  alice2 = w.login("alice", "ALICE2");
  carol = w.login("carol", "CAROL1");
});
afterAll(() => w.close());

describe("/keys/query overlay", () => {
  test("before a refresh, the homeserver's stale answer passes through unchanged", async () => {
    const body = await keysQuery(alice, { [bob()]: [] });
    expect(Object.keys(body.device_keys[bob()])).toEqual(["DEV0"]);
  });

  test("after a refresh: fresh devices, display names and the requester's signature kept, others untouched", async () => {
    // carol queries bob first: she becomes a tracker and will be told about the refresh.
    await keysQuery(carol, { [bob()]: [] });
    expect((await w.refresh(bob(), alice)).status).toBe(202);
    const body = await keysQuery(alice, { [bob()]: [], "@carol:hs.test": [] });
    expect(Object.keys(body.device_keys[bob()]).sort()).toEqual(["DEV0", "DEV1"]);
    expect(body.device_keys[bob()].DEV0.unsigned.device_display_name).toBe("Old phone");
    expect(body.device_keys[bob()].DEV1.unsigned.device_display_name).toBe("New laptop");
    expect(body.master_keys[bob()].signatures["@alice:hs.test"]).toEqual({ "ed25519:ALICEMSK": "alice-signature" });
    expect(body.master_keys[bob()].keys).toEqual(bobUser.masterKey!.keys);
    expect(body.user_signing_keys["@alice:hs.test"].keys).toEqual({ "ed25519:U": "U" });
    expect(body.device_keys["@carol:hs.test"]).toHaveProperty("CAROLDEV");
    expect(body.failures).toEqual({}); // bob was that server's only user, and he was served fresh
  });

  test("a device-id filter is honoured", async () => {
    const body = await keysQuery(alice, { [bob()]: ["DEV1"] });
    expect(Object.keys(body.device_keys[bob()])).toEqual(["DEV1"]);
  });

  test("a 1000-device answer is overlaid", async () => {
    const big = makeUser(`@big:${w.remote.serverName}`, { devices: 1000, crossSigning: false });
    w.remote.setUser(big);
    expect((await w.refresh(big.userId, alice)).status).toBe(202);
    const body = await keysQuery(alice, { [big.userId]: [] });
    expect(Object.keys(body.device_keys[big.userId])).toHaveLength(1000);
  });
});

describe("/sync injection", () => {
  test("each device of the asker, and a device that tracked bob, gets bob in device_lists.changed once acknowledged", async () => {
    const first = await sync(alice);
    expect(first.device_lists).toBeUndefined(); // initial syncs are never touched
    const a = await sync(alice, "s0");
    expect(a.device_lists.changed).toContain(bob());
    // A lost response: the same since again gets it again.
    const again = await sync(alice, "s0");
    expect(again.device_lists.changed).toContain(bob());
    // A later since equal to a next_batch that carried it acknowledges it.
    const acked = await sync(alice, again.next_batch);
    expect(acked.device_lists?.changed ?? []).not.toContain(bob());
    // alice's second device and carol (a tracker) are told too, independently.
    expect((await sync(alice2, "s0")).device_lists.changed).toContain(bob());
    expect((await sync(carol, "s0")).device_lists.changed).toEqual([bob()]); // carol never asked about @big
  });

  test("a long-poll already waiting is answered within a second of a refresh, acknowledged only by its own position", async () => {
    // Nothing is pending after this ack round: the last answer's position is the homeserver's own.
    const since = (await sync(alice2, (await sync(alice2, "s0")).next_batch)).next_batch;
    const waiting = sync(alice2, since, 20_000);
    await expect
      .poll(() => w.hs.seen.some((s) => s.target.includes(`since=${since}`) && s.target.includes("timeout=20000")))
      .toBe(true);
    const started = Date.now();
    w.remote.setUser(makeUser(bob(), { devices: ["DEV0", "DEV1", "DEV2"] }));
    expect((await w.refresh(bob(), alice)).status).toBe(202);
    const woke = await waiting;
    expect(Date.now() - started).toBeLessThan(2000);
    // The position asked from, with a suffix of ours (src/delivery/tokens.ts).
    expect(woke).toMatchObject({
      next_batch: expect.stringMatching(new RegExp(`^${since}\\.mrp_`)),
      device_lists: { changed: [bob()] },
    });
    await expect.poll(() => w.hs.closedEarly.some((t) => t.includes("timeout=20000"))).toBe(true);
    // Had that answer been lost, the retry from `since` carries bob again.
    const retry = await sync(alice2, since);
    expect(retry.device_lists.changed).toEqual([bob()]);
    // The woken answer's own position acknowledges; the homeserver sees its own token.
    expect((await sync(alice2, woke.next_batch)).device_lists?.changed ?? []).toEqual([]);
    expect(w.hs.seen.at(-1)!.target).toBe(`/_matrix/client/v3/sync?timeout=0&since=${since}`);
  });

  test("a poll that starts with news pending is not held for its timeout: the homeserver is asked with timeout=0", async () => {
    const frank = w.login("frank", "FRANK1");
    await keysQuery(frank, { [bob()]: [] });
    // A real change (only those reach clients: frank was already shown the last list).
    w.remote.setUser(makeUser(bob(), { devices: ["DEV0", "DEV1", "DEV2", "DEV3"] }));
    expect((await w.refresh(bob(), alice)).status).toBe(202);
    const started = Date.now();
    const body = await sync(frank, "s0", 20_000);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(body.device_lists.changed).toContain(bob());
    expect(body.next_batch).not.toBe("s0"); // a real token, which will acknowledge it
    expect(w.hs.seen.at(-1)!.target).toBe("/_matrix/client/v3/sync?timeout=0&since=s0");
  });

  test("/keys/changes carries pending users", async () => {
    w.hs.on(
      "/_matrix/client/v3/keys/changes",
      (_req, res) => void res.end(JSON.stringify({ changed: ["@x:hs.test"], left: [] })),
    );
    const body = await (await api(carol, "/_matrix/client/v3/keys/changes?from=s1&to=s9")).json();
    expect(body.changed).toEqual(expect.arrayContaining(["@x:hs.test", bob()]));
  });

  test("simplified sliding sync carries it at extensions.e2ee.device_lists (e2ee enabled), acknowledged by pos", async () => {
    const dave = w.login("dave", "DAVE1");
    await keysQuery(dave, { [bob()]: [] }); // dave tracks bob
    w.remote.setUser(makeUser(bob(), { devices: ["DEV0", "DEV1", "DEV2", "DEV3", "DEV4"] }));
    expect((await w.refresh(bob(), alice)).status).toBe(202);
    let pos = 0;
    w.hs.on(
      "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
      (_req, res) => void res.end(JSON.stringify({ pos: `p${++pos}`, lists: {}, rooms: {}, extensions: {} })),
    );
    const slide = (p: string) =>
      api(dave, `/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?pos=${p}&timeout=0`, {
        method: "POST",
        body: JSON.stringify({ conn_id: "encryption", lists: {}, extensions: { e2ee: { enabled: true } } }),
      }).then((r) => r.json());
    const one = await slide("p0");
    expect(one.extensions.e2ee.device_lists.changed).toEqual([bob()]);
    const two = await slide(one.pos);
    expect(two.extensions.e2ee?.device_lists?.changed ?? []).toEqual([]);
  });

  test("a 5 MB /sync gets the injection and stays valid JSON", async () => {
    const erin = w.login("erin", "ERIN1");
    await keysQuery(erin, { [bob()]: [] });
    w.remote.setUser(makeUser(bob(), { devices: ["DEV0", "DEV1", "DEV2", "DEV3", "DEV4", "DEV5"] }));
    expect((await w.refresh(bob(), alice)).status).toBe(202);
    const big = bigSyncBody(5_000_000, { nextBatch: "big1" });
    w.hs.on("/_matrix/client/v3/sync?timeout=0&since=big0", (_req, res) => void res.end(JSON.stringify(big)));
    const body = await sync(erin, "big0");
    expect(body.next_batch).toMatch(/^big1\.mrp_/);
    expect(body.device_lists.changed).toContain(bob());
    expect(Object.keys(body.rooms.join).length).toBe(
      Object.keys((big as { rooms: { join: object } }).rooms.join).length,
    );
  });
});

describe("overlay freshness", () => {
  test("the homeserver reporting bob changed stops the overlay being served blindly, and re-verifies it", async () => {
    expect((await w.refresh(bob(), alice)).status).toBe(202);
    expect(Object.keys((await keysQuery(alice, { [bob()]: [] })).device_keys[bob()]).length).toBeGreaterThan(1);
    const before = w.remote.count({ userId: bob(), endpoint: "devices" });
    const held = w.remote.hold({ userId: bob(), endpoint: "devices" });
    hsChanged = [bob()];
    const s = await sync(carol, "s0");
    expect(s.device_lists.changed).toContain(bob());
    // The re-verification is running (held); meanwhile the homeserver's own answer is served.
    await w.remote.waitFor(() => w.remote.count({ userId: bob(), endpoint: "devices" }) > before);
    expect(Object.keys((await keysQuery(alice, { [bob()]: [] })).device_keys[bob()])).toEqual(["DEV0"]);
    held.release();
    await expect
      .poll(async () => Object.keys((await keysQuery(alice, { [bob()]: [] })).device_keys[bob()]).length)
      .toBeGreaterThan(1);
  });
});
