// Element X's two simplified-sliding-sync connections (MSC4186, which the pinned Synapse serves
// natively) from one device, through the proxy in front of a real Synapse: a refresh reaches
// the encryption connection, which asked for the e2ee extension, and leaves the room-list
// connection's answers alone. Request shapes from matrix-rust-sdk 0.18.0 (RoomListService,
// EncryptionSyncService).
import { afterAll, beforeAll, expect, test } from "vitest";
import { startHomeservers, type Homeservers } from "../../scripts/homeservers.ts";
import { call, type Session } from "./helpers/client.ts";
import { refreshDevices, startHs1Proxy, type Hs1Proxy } from "./helpers/proxy.ts";
import { makeBobStale } from "./helpers/stale.ts";
import { keysView, meetAliceAndBob } from "./helpers/story.ts";
import { encryptionRequest, roomListRequest } from "../helpers/element-x.ts";

const log = (s: string): void => console.log(`[e2e sliding] ${s}`);
const SLIDING = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
const OURS = /\.mrp_[0-9a-z]{12}$/;

const roomList = roomListRequest;
const encryption = encryptionRequest;

interface SlidingAnswer {
  pos: string;
  extensions?: { e2ee?: { device_lists?: { changed?: string[] } }; to_device?: { next_batch?: string } } & Record<
    string,
    unknown
  >;
}

async function slide(
  s: Session,
  body: unknown,
  pos?: string,
): Promise<{ status: number; body: SlidingAnswer; text: string }> {
  const q = `${pos ? `pos=${encodeURIComponent(pos)}&` : ""}timeout=0`;
  const r = await call<SlidingAnswer>(s.clientUrl, "POST", `${SLIDING}?${q}`, { token: s.accessToken, body });
  return { ...r, text: JSON.stringify(r.body) };
}

let servers: Homeservers;
let proxy: Hs1Proxy;

beforeAll(async () => {
  servers = await startHomeservers({ log, lockTimeoutMs: 800_000 });
  proxy = await startHs1Proxy(servers.hs1, servers.caPath, { extra: ["--refresh-cache-ms", "0"] });
}, 900_000);

afterAll(async () => {
  await proxy?.close();
  await servers?.stop();
}, 120_000);

test("Element X's two connections: the encryption connection sees the refreshed user, the room-list connection is untouched", async () => {
  const { hs1, hs2 } = servers;
  const story = await meetAliceAndBob(hs1, hs2, log, `sss${Date.now().toString(36)}`);
  const alice: Session = { ...story.alice, clientUrl: proxy.url };
  const bob = story.bob.userId;
  // alice's device queries bob's keys through the proxy: it will hear of his refreshes.
  await keysView(alice, bob);
  // Both connections start, as Element X does on launch.
  const rl0 = await slide(alice, roomList);
  const enc0 = await slide(alice, encryption());
  expect(rl0.status).toBe(200);
  expect(enc0.status).toBe(200);
  log(`room-list pos ${rl0.body.pos}, encryption pos ${enc0.body.pos}`);

  // A real change for the refresh to find (only those reach clients): bob's new device, which
  // hs1 never hears of.
  await makeBobStale({ hs1, hs2, alice: story.alice, bob: story.bob, log });
  expect(await refreshDevices(proxy.url, story.alice.accessToken, bob)).toEqual({ status: 202, body: {} });

  // The room-list connection: no e2ee member created, Synapse's own pos.
  const rl1 = await slide(alice, roomList, rl0.body.pos);
  expect(rl1.status).toBe(200);
  expect(rl1.body.extensions?.e2ee).toBeUndefined();
  expect(rl1.body.pos).not.toMatch(OURS);

  // The encryption connection: bob in extensions.e2ee.device_lists.changed.
  const enc1 = await slide(alice, encryption(enc0.body.extensions?.to_device?.next_batch), enc0.body.pos);
  expect(enc1.status).toBe(200);
  expect(enc1.body.extensions?.e2ee?.device_lists?.changed).toContain(bob);
  expect(enc1.body.pos).toMatch(OURS);
  // Its next request acknowledges it; Synapse accepts the position (ours comes off first).
  const enc2 = await slide(alice, encryption(enc1.body.extensions?.to_device?.next_batch), enc1.body.pos);
  expect(enc2.status).toBe(200);
  expect(enc2.body.extensions?.e2ee?.device_lists?.changed ?? []).not.toContain(bob);
  // And the room-list connection still never hears of it.
  const rl2 = await slide(alice, roomList, rl1.body.pos);
  expect(rl2.status).toBe(200);
  expect(rl2.body.extensions?.e2ee).toBeUndefined();
}, 600_000);
