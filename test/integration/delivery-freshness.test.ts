// Overlay freshness rules that keep the proxy from ever pinning an old snapshot.
import { afterAll, beforeAll, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { startWorld, type World } from "../helpers/world.ts";

let w: World;
let alice: string;
let hsAnswer: (users: string[]) => Record<string, unknown>;

beforeAll(async () => {
  w = await startWorld(["--refresh-cache-ms", "0", "--snapshot-max-age-ms", "1500"]);
  alice = w.login("alice");
  w.hs.on("/_matrix/client/v3/keys/query", (_req, res, body) => {
    const users = Object.keys(JSON.parse(body.toString()).device_keys);
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(hsAnswer(users)));
  });
});
afterAll(() => w.close());

const keysQuery = async (u: string) =>
  (await (
    await fetch(`${w.proxy.url}/_matrix/client/v3/keys/query`, {
      method: "POST",
      headers: { authorization: `Bearer ${alice}` },
      body: JSON.stringify({ device_keys: { [u]: [] } }),
    })
  ).json()) as { device_keys: Record<string, Record<string, unknown>> };

test("once the homeserver's own answer equals the snapshot, the overlay is dropped", async () => {
  const bob = makeUser(`@bob:${w.remote.serverName}`, { devices: ["A", "B"] });
  w.remote.setUser(bob);
  hsAnswer = () => ({ device_keys: { [bob.userId]: { A: bob.devices[0]!.keys } } }); // stale: only A
  expect((await w.refresh(bob.userId, alice)).status).toBe(202);
  expect(Object.keys((await keysQuery(bob.userId)).device_keys[bob.userId]!).sort()).toEqual(["A", "B"]);
  expect(await w.proxy.services.store.getSnapshot(bob.userId)).toBeDefined();
  // The homeserver catches up on its own: same devices, same keys.
  hsAnswer = () => ({
    device_keys: { [bob.userId]: { A: bob.devices[0]!.keys, B: bob.devices[1]!.keys } },
    master_keys: { [bob.userId]: bob.masterKey },
    self_signing_keys: { [bob.userId]: bob.selfSigningKey },
  });
  await keysQuery(bob.userId);
  expect(await w.proxy.services.store.getSnapshot(bob.userId)).toBeUndefined();
  // From now on the homeserver's answer is served as is, even if it later changes.
  hsAnswer = () => ({
    device_keys: { [bob.userId]: { A: bob.devices[0]!.keys, B: bob.devices[1]!.keys, C: { device_id: "C" } } },
  });
  expect(Object.keys((await keysQuery(bob.userId)).device_keys[bob.userId]!).sort()).toEqual(["A", "B", "C"]);
});

test("a snapshot older than --snapshot-max-age-ms is not served, and is fetched again", async () => {
  const carol = makeUser(`@carol:${w.remote.serverName}`, { devices: ["X", "Y"] });
  w.remote.setUser(carol);
  hsAnswer = () => ({ device_keys: { [carol.userId]: { X: carol.devices[0]!.keys } } });
  expect((await w.refresh(carol.userId, alice)).status).toBe(202);
  expect(Object.keys((await keysQuery(carol.userId)).device_keys[carol.userId]!)).toHaveLength(2);
  const fetches = w.remote.count({ userId: carol.userId, endpoint: "devices" });
  await new Promise((r) => setTimeout(r, 1700));
  const held = w.remote.hold({ userId: carol.userId, endpoint: "devices" });
  // Too old: the homeserver's own answer is served while a fresh fetch runs.
  expect(Object.keys((await keysQuery(carol.userId)).device_keys[carol.userId]!)).toEqual(["X"]);
  await w.remote.waitFor(() => w.remote.count({ userId: carol.userId, endpoint: "devices" }) > fetches);
  held.release();
  await expect.poll(async () => Object.keys((await keysQuery(carol.userId)).device_keys[carol.userId]!).length).toBe(2);
});
