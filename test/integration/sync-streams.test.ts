// Who gets a delivery, and when it counts as received:
// - simplified sliding sync per connection, only where the client asked for the e2ee extension
//   (Element X's two connections, request shapes from matrix-rust-sdk 0.18.0: RoomListService,
//   conn_id "room-list", and EncryptionSyncService, conn_id "encryption");
// - exact acknowledgements through positions of ours (src/delivery/tokens.ts): a quiet account
//   whose next_batch does not move loses nothing to a lost answer, and does not busy-loop;
// - those positions never reach the homeserver, wherever a client reuses them;
// - a homeserver that compresses /sync despite `accept-encoding: identity`.
// Runs on the default engine here; sync-streams-node-engine.test.ts runs it through node:http.
import type { IncomingMessage, ServerResponse } from "node:http";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { startWorld, type World } from "../helpers/world.ts";
import { encryptionRequest, roomListRequest } from "../helpers/element-x.ts";

const SLIDING = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
const OURS = /\.mrp_[0-9a-z]{12}$/;

const roomListBody = JSON.stringify(roomListRequest);
const encryptionBody = (toDeviceSince?: string) => JSON.stringify(encryptionRequest(toDeviceSince));

let w: World;
let bob: string;
/** What the homeserver last sent on each sliding connection, byte for byte. */
const sentOn = new Map<string, string>();
const posCount = new Map<string, number>();
/** /sync answers for users whose account is quiet: next_batch = since. */
const quiet = new Set<string>();
let gzipSyncFor = new Set<string>();
let syncCount = 0;

function serveSliding(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
  const b = JSON.parse(body.toString()) as { conn_id?: string; extensions?: Record<string, unknown> };
  const conn = b.conn_id ?? "";
  const q = new URL(req.url!, "http://x").searchParams;
  const user = w.hs.tokens.get((req.headers.authorization ?? "").slice(7))?.[0] ?? "";
  const answer = () => {
    if (res.writableEnded || res.destroyed) return;
    const n = (posCount.get(conn) ?? 0) + 1;
    posCount.set(conn, n);
    const pos = quiet.has(user) && q.get("pos") ? q.get("pos")! : `${conn}-${n}`;
    const extensions =
      conn === "room-list"
        ? { account_data: { global: [] }, receipts: { rooms: {} }, typing: { rooms: {} } }
        : { to_device: { next_batch: `td${n}`, events: [] } };
    const text = JSON.stringify({
      pos,
      lists: conn === "room-list" ? { all_rooms: { count: 0 } } : {},
      rooms: {},
      extensions,
    });
    sentOn.set(conn, text);
    if (gzipSyncFor.has(user)) {
      const gz = gzipSync(text);
      res.writeHead(200, {
        "content-type": "application/json",
        "content-encoding": "gzip",
        "content-length": gz.length,
      });
      return void res.end(gz);
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(text);
  };
  const timeout = Number(q.get("timeout") ?? 0);
  if (timeout > 0) setTimeout(answer, timeout);
  else answer();
}

function serveSync(req: IncomingMessage, res: ServerResponse): void {
  const q = new URL(req.url!, "http://x").searchParams;
  const user = w.hs.tokens.get((req.headers.authorization ?? "").slice(7))?.[0] ?? "";
  const answer = () => {
    if (res.writableEnded || res.destroyed) return;
    const since = q.get("since");
    const text = JSON.stringify({ next_batch: quiet.has(user) && since ? since : `s${++syncCount}`, rooms: {} });
    if (gzipSyncFor.has(user)) {
      const gz = gzipSync(text);
      res.writeHead(200, {
        "content-type": "application/json",
        "content-encoding": "gzip",
        "content-length": gz.length,
      });
      return void res.end(gz);
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(text);
  };
  const timeout = Number(q.get("timeout") ?? 0);
  if (timeout > 0) setTimeout(answer, timeout);
  else answer();
}

const api = (token: string, path: string, init: RequestInit = {}) =>
  fetch(w.proxy.url + path, {
    ...init,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...(init.headers ?? {}) },
  });
const slide = async (token: string, body: string, pos?: string, timeout = 0) => {
  const r = await api(token, `${SLIDING}?${pos ? `pos=${encodeURIComponent(pos)}&` : ""}timeout=${timeout}`, {
    method: "POST",
    body,
  });
  return r.text();
};
const sync = async (token: string, since?: string, timeout = 0) =>
  (
    await api(token, `/_matrix/client/v3/sync?timeout=${timeout}${since ? `&since=${encodeURIComponent(since)}` : ""}`)
  ).json();
const changed = (b: {
  device_lists?: { changed?: string[] };
  extensions?: { e2ee?: { device_lists?: { changed?: string[] } } };
}) => b.device_lists?.changed ?? b.extensions?.e2ee?.device_lists?.changed ?? [];
/** A new device that tracks bob (it queried his keys through the proxy). */
async function trackingDevice(name: string): Promise<string> {
  const token = w.login(name, `${name.toUpperCase()}DEV`);
  await api(token, "/_matrix/client/v3/keys/query", {
    method: "POST",
    body: JSON.stringify({ device_keys: { [bob]: [] } }),
  });
  return token;
}
let devices = 2;
async function refreshBob(): Promise<void> {
  w.remote.setUser(makeUser(bob, { devices: ++devices }));
  expect((await w.refresh(bob, w.login("asker", "ASKER"))).status).toBe(202);
}
const seenBy = (user: string) =>
  w.hs.seen.filter((s) => w.hs.tokens.get((s.headers.authorization ?? "").slice(7))?.[0] === user);

beforeAll(async () => {
  w = await startWorld(["--refresh-cache-ms", "0", "--rate-target-burst", "1000", "--rate-user-burst", "1000"]);
  bob = `@bob:${w.remote.serverName}`;
  w.remote.setUser(makeUser(bob, { devices: devices }));
  w.hs.on(
    "/_matrix/client/v3/keys/query",
    (_req, res) => void res.end(JSON.stringify({ device_keys: {}, failures: {} })),
  );
  w.hs.on(SLIDING, serveSliding);
  w.hs.on("/_matrix/client/v3/sync", serveSync);
  for (const p of ["/_matrix/client/v3/keys/changes", "/_matrix/client/v3/rooms/", "/_matrix/client/v3/events"]) {
    w.hs.on(p, (_req, res) => void res.end(JSON.stringify({ changed: [], left: [], chunk: [] })));
  }
});
afterAll(() => w.close());

describe("simplified sliding sync: per connection, only where the client asked", () => {
  test("Element X: the room-list connection's body is untouched; the encryption connection gets the user, acknowledged by its own pos", async () => {
    const ex = await trackingDevice("ex");
    // Both connections start (no pos), as Element X does on launch.
    const rl0 = JSON.parse(await slide(ex, roomListBody)).pos as string;
    const enc0 = JSON.parse(await slide(ex, encryptionBody())).pos as string;
    await refreshBob();

    const rl1 = await slide(ex, roomListBody, rl0);
    expect(rl1).toBe(sentOn.get("room-list")); // byte for byte
    expect(JSON.parse(rl1).extensions.e2ee).toBeUndefined();
    const rl2 = await slide(ex, roomListBody, JSON.parse(rl1).pos);
    expect(rl2).toBe(sentOn.get("room-list"));

    const enc1 = JSON.parse(await slide(ex, encryptionBody("td1"), enc0));
    expect(enc1.extensions.e2ee.device_lists.changed).toEqual([bob]);
    expect(enc1.extensions.to_device.next_batch).toMatch(/^td/); // the homeserver's extensions kept
    expect(enc1.pos).toMatch(OURS);
    const enc2 = JSON.parse(await slide(ex, encryptionBody("td2"), enc1.pos));
    expect(changed(enc2)).toEqual([]);
    // The homeserver saw its own pos, never ours.
    expect(seenBy("@ex:hs.test").every((s) => !s.target.includes(".mrp_"))).toBe(true);
  });

  test("a refresh wakes the waiting encryption long-poll, not the room-list one", async () => {
    const ex = await trackingDevice("exwait");
    const rl0 = JSON.parse(await slide(ex, roomListBody)).pos as string;
    const enc0 = JSON.parse(await slide(ex, encryptionBody())).pos as string;
    const before = w.hs.seen.length;
    const rl = slide(ex, roomListBody, rl0, 1500);
    const enc = slide(ex, encryptionBody("td1"), enc0, 20_000);
    await expect.poll(() => w.hs.seen.slice(before).filter((s) => s.target.startsWith(SLIDING)).length).toBe(2);
    await refreshBob();
    const woke = JSON.parse(await enc);
    expect(woke.extensions.e2ee.device_lists.changed).toEqual([bob]);
    expect(woke.pos).toMatch(OURS);
    const rlText = await rl;
    expect(JSON.parse(rlText).extensions.e2ee).toBeUndefined();
    expect(JSON.parse(rlText).pos).toMatch(/^room-list-/); // the homeserver's own answer, at its timeout
  });

  test("two e2ee connections and classic /sync of one device each get the delivery, acknowledged independently", async () => {
    const mix = await trackingDevice("mix");
    const body = (conn: string) => JSON.stringify({ conn_id: conn, extensions: { e2ee: { enabled: true } } });
    const a0 = JSON.parse(await slide(mix, body("a"))).pos as string;
    const b0 = JSON.parse(await slide(mix, body("b"))).pos as string;
    await refreshBob();
    const a1 = JSON.parse(await slide(mix, body("a"), a0));
    expect(changed(a1)).toEqual([bob]);
    expect(changed(JSON.parse(await slide(mix, body("a"), a1.pos)))).toEqual([]); // a acknowledged
    const b1 = JSON.parse(await slide(mix, body("b"), b0));
    expect(changed(b1)).toEqual([bob]); // b still gets it
    const s1 = await sync(mix, "s0");
    expect(changed(s1)).toEqual([bob]); // and so does classic /sync
    expect(changed(await sync(mix, s1.next_batch))).toEqual([]);
    expect(changed(JSON.parse(await slide(mix, body("b"), b1.pos)))).toEqual([]);
  });
});

describe("sliding-sync request bodies", () => {
  test("a body too large to be a sync request: 413 M_TOO_LARGE, as JSON with CORS headers; one that is not JSON goes to the homeserver untouched", async () => {
    const token = w.login("big", "BIGDEV");
    const r = await api(token, `${SLIDING}?timeout=0`, {
      method: "POST",
      body: JSON.stringify({ conn_id: "x", pad: "x".repeat(2 << 20) }),
    });
    expect(r.status).toBe(413);
    expect(r.headers.get("access-control-allow-origin")).toBe("*");
    expect((await r.json()).errcode).toBe("M_TOO_LARGE");
    w.hs.on(
      `${SLIDING}?pos=nj`,
      (_req, res) =>
        void res.writeHead(400, { "content-type": "application/json" }).end('{"errcode":"M_NOT_JSON","error":"no"}'),
    );
    const before = w.hs.seen.length;
    const bad = await api(token, `${SLIDING}?pos=nj&timeout=0`, { method: "POST", body: "{not json" });
    expect(bad.status).toBe(400);
    expect(w.hs.seen.slice(before).map((s) => s.body.toString())).toEqual(["{not json"]);
  });
});

describe("exact acknowledgements: a quiet account whose token does not move", () => {
  test("/sync: a lost answer is carried again, the received one acknowledged, and the long-poll then waits", async () => {
    const token = await trackingDevice("quiet");
    quiet.add("@quiet:hs.test");
    await refreshBob();
    const lost = await sync(token, "q1", 30_000);
    expect(changed(lost)).toEqual([bob]);
    expect(lost.next_batch).toMatch(OURS);
    expect(lost.next_batch.startsWith("q1.")).toBe(true);
    // That answer never reached the client: it asks again from the same point.
    const got = await sync(token, "q1", 30_000);
    expect(changed(got)).toEqual([bob]);
    expect(got.next_batch).not.toBe(lost.next_batch);
    // A retry of the lost one's token would not have been received: only `got`'s acknowledges.
    const before = w.hs.seen.length;
    const next = await sync(token, got.next_batch, 1000);
    expect(changed(next)).toEqual([]);
    expect(next.next_batch).toBe("q1"); // plain again: nothing of ours was added
    // The homeserver held that poll for its own timeout, from its own token: no busy loop.
    expect(w.hs.seen.slice(before).map((s) => s.target)).toEqual(["/_matrix/client/v3/sync?timeout=1000&since=q1"]);
  });

  test("sliding sync: the same, with pos", async () => {
    const token = await trackingDevice("quietslide");
    quiet.add("@quietslide:hs.test");
    const p0 = "enc-quiet";
    await slide(token, encryptionBody()); // the connection starts
    await refreshBob();
    const lost = JSON.parse(await slide(token, encryptionBody("td1"), p0, 30_000));
    expect(changed(lost)).toEqual([bob]);
    expect(lost.pos).toMatch(OURS);
    const got = JSON.parse(await slide(token, encryptionBody("td1"), p0, 30_000));
    expect(changed(got)).toEqual([bob]);
    const before = w.hs.seen.length;
    const next = JSON.parse(await slide(token, encryptionBody("td2"), got.pos, 1000));
    expect(changed(next)).toEqual([]);
    expect(next.pos).toBe(p0);
    expect(w.hs.seen.slice(before).map((s) => s.target)).toEqual([`${SLIDING}?pos=${p0}&timeout=1000`]);
  });

  test("a position of ours never reaches the homeserver, wherever the client reuses it", async () => {
    const token = await trackingDevice("reuse");
    await refreshBob();
    const ours = (await sync(token, "r1")).next_batch as string;
    expect(ours).toMatch(OURS);
    const plain = ours.replace(OURS, "");
    const before = w.hs.seen.length;
    const enc = encodeURIComponent(ours);
    const targets = [
      `/_matrix/client/v3/keys/changes?from=${enc}&to=${enc}`,
      `/_matrix/client/v3/rooms/!r:hs.test/messages?from=${enc}&dir=b&limit=5`,
      `/_matrix/client/v3/events?from=${enc}&timeout=0`,
      `/_matrix/client/v3/sync?since=${enc}&timeout=0`,
    ];
    for (const t of targets) expect((await api(token, t)).status).toBe(200);
    const seen = w.hs.seen.slice(before).map((s) => s.target);
    const penc = encodeURIComponent(plain);
    expect(seen).toEqual([
      `/_matrix/client/v3/keys/changes?from=${penc}&to=${penc}`,
      `/_matrix/client/v3/rooms/!r:hs.test/messages?from=${penc}&dir=b&limit=5`,
      `/_matrix/client/v3/events?from=${penc}&timeout=0`,
      `/_matrix/client/v3/sync?since=${penc}&timeout=0`,
    ]);
  });
});

describe("a homeserver that compresses /sync although asked not to", () => {
  test("the delivery reaches the client, with at most one answer-at-once poll", async () => {
    const token = await trackingDevice("gz");
    gzipSyncFor = new Set(["@gz:hs.test"]);
    await refreshBob();
    let since = "g0";
    let got = false;
    for (let i = 0; i < 4 && !got; i++) {
      const body = await sync(token, since, 1000);
      got = changed(body).includes(bob);
      since = body.next_batch;
    }
    expect(got).toBe(true);
    const forced = seenBy("@gz:hs.test").filter(
      (s) => s.target.startsWith("/_matrix/client/v3/sync") && s.target.includes("timeout=0"),
    );
    expect(forced.length).toBeLessThanOrEqual(1);
    gzipSyncFor = new Set();
  });

  test("sliding sync: the same", async () => {
    const token = await trackingDevice("gzslide");
    gzipSyncFor = new Set(["@gzslide:hs.test"]);
    let pos = JSON.parse(await slide(token, encryptionBody())).pos as string;
    await refreshBob();
    let got = false;
    for (let i = 0; i < 4 && !got; i++) {
      const body = JSON.parse(await slide(token, encryptionBody(), pos, 1000));
      got = changed(body).includes(bob);
      pos = body.pos;
    }
    expect(got).toBe(true);
    const forced = seenBy("@gzslide:hs.test").filter(
      (s) => s.target.startsWith(SLIDING) && s.target.includes("timeout=0"),
    );
    expect(forced.length).toBeLessThanOrEqual(2); // the first request (no pos) asked for timeout=0 itself
    gzipSyncFor = new Set();
  });
});
