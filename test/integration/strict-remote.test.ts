// A strict remote rebuilds device keys from a fixed set of fields and so drops any extra signed
// field (MSC3814's `"dehydrated": true`), which breaks that device's self-signature. The proxy
// must not then hide a device the homeserver lists correctly: the device is shown as the
// homeserver has it, only a device that is new AND invalid is left out, the overlay still
// clears once the homeserver catches up, and every dropped part is logged at info.
// Real sockets: the fake remote (HTTPS, verifying our X-Matrix) and the fake homeserver.
import { afterAll, beforeAll, expect, test } from "vitest";
import { type FakeUser, type Json, makeDevice, makeUser, newEd25519, signWith } from "../helpers/fake-devices.ts";
import { startWorld, type World } from "../helpers/world.ts";

let w: World;
let alice: string;
let hsAnswer: (users: string[]) => Json;

beforeAll(async () => {
  w = await startWorld(["--refresh-cache-ms", "0"]);
  alice = w.login("alice");
  w.hs.on("/_matrix/client/v3/keys/query", (_req, res, body) => {
    const users = Object.keys(JSON.parse(body.toString()).device_keys);
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(hsAnswer(users)));
  });
});
afterAll(() => w.close());

const keysQuery = async (u: string, ids: string[] = []) =>
  (await (
    await fetch(`${w.proxy.url}/_matrix/client/v3/keys/query`, {
      method: "POST",
      headers: { authorization: `Bearer ${alice}` },
      body: JSON.stringify({ device_keys: { [u]: ids } }),
    })
  ).json()) as { device_keys: Record<string, Record<string, Json>> };

const logRecords = () => w.proxy.logs.map((l) => JSON.parse(l) as Json);

/** Adds a device to `user` whose keys carry `"dehydrated": true`, signed by itself and the user's self-signing key. */
function addDehydrated(user: FakeUser, id: string): Json {
  const d = makeDevice(user.userId, id);
  const { signatures: _s, ...rest } = d.entry.keys as Json;
  let keys = signWith({ ...rest, dehydrated: true }, user.userId, `ed25519:${id}`, d.key);
  keys = signWith(
    keys,
    user.userId,
    `ed25519:${user.crossSigning!.selfSigningKey.pub}`,
    user.crossSigning!.selfSigningKey,
  );
  user.devices.push({ device_id: id, keys });
  user.deviceKeys[id] = d.key;
  return keys;
}

/** What a strict remote sends: the same device without the field its rebuild does not know. */
function stripDehydrated(user: FakeUser, id: string): void {
  const entry = user.devices.find((d) => d.device_id === id)!;
  const { dehydrated: _d, ...keys } = entry.keys as Json;
  entry.keys = keys;
}

test("a device the remote breaks is shown as the homeserver has it; a new invalid one is left out; the overlay still clears", async () => {
  const bob = makeUser(`@bob:${w.remote.serverName}`, { devices: ["PHONE", "LAPTOP"] });
  const dehydrated = addDehydrated(bob, "DEHY");
  stripDehydrated(bob, "DEHY");
  // A device the homeserver has never seen, whose keys were changed after signing.
  const forged = makeDevice(bob.userId, "FORGED");
  (forged.entry.keys!.keys as Record<string, string>)["curve25519:FORGED"] = newEd25519().pub;
  bob.devices.push(forged.entry);
  w.remote.setUser(bob);
  const keysOf = (id: string) => bob.devices.find((d) => d.device_id === id)!.keys as Json;

  // The homeserver is stale (it has not heard of LAPTOP yet) but lists DEHY correctly.
  hsAnswer = () => ({ device_keys: { [bob.userId]: { PHONE: keysOf("PHONE"), DEHY: dehydrated } } });
  expect((await w.refresh(bob.userId, alice)).status).toBe(202);
  const served = (await keysQuery(bob.userId)).device_keys[bob.userId]!;
  expect(Object.keys(served).sort()).toEqual(["DEHY", "LAPTOP", "PHONE"]);
  expect(served.DEHY).toEqual(dehydrated); // the homeserver's copy, `dehydrated` and signatures intact
  expect(served.LAPTOP!.keys).toEqual(keysOf("LAPTOP").keys);
  expect((await keysQuery(bob.userId, ["DEHY"])).device_keys[bob.userId]).toEqual({ DEHY: dehydrated });

  // Each dropped device is logged at info with the user, its id and why.
  const drops = logRecords().filter((r) => r.level === "info" && r.userId === bob.userId && r.part === "device");
  expect(drops.map((r) => [r.deviceId, r.reason])).toEqual([
    ["DEHY", "self-signature does not verify"],
    ["FORGED", "self-signature does not verify"],
  ]);

  // The homeserver catches up: the overlay steps aside, and from then on its answer is served as is.
  const caughtUp = {
    device_keys: { [bob.userId]: { PHONE: keysOf("PHONE"), LAPTOP: keysOf("LAPTOP"), DEHY: dehydrated } },
    master_keys: { [bob.userId]: bob.masterKey },
    self_signing_keys: { [bob.userId]: bob.selfSigningKey },
  };
  hsAnswer = () => caughtUp;
  expect(await w.proxy.services.store.getSnapshot(bob.userId)).toBeDefined();
  await keysQuery(bob.userId);
  expect(await w.proxy.services.store.getSnapshot(bob.userId)).toBeUndefined();
  expect((await keysQuery(bob.userId)).device_keys[bob.userId]).toEqual(caughtUp.device_keys[bob.userId]);
});

test("a restart keeps the list of invalid devices: the homeserver's copy is still shown", async () => {
  const dave = makeUser(`@dave:${w.remote.serverName}`, { devices: ["PHONE"] });
  const dehydrated = addDehydrated(dave, "DEHY");
  stripDehydrated(dave, "DEHY");
  w.remote.setUser(dave);
  hsAnswer = () => ({ device_keys: { [dave.userId]: { DEHY: dehydrated } } });
  expect((await w.refresh(dave.userId, alice)).status).toBe(202);
  await w.restartProxy(["--refresh-cache-ms", "0"]);
  const served = (await keysQuery(dave.userId)).device_keys[dave.userId]!;
  expect(Object.keys(served).sort()).toEqual(["DEHY", "PHONE"]);
  expect(served.DEHY).toEqual(dehydrated);
});

test("a dropped cross-signing key is logged at info with the reason", async () => {
  const carol = makeUser(`@carol:${w.remote.serverName}`);
  const { signatures: _s, ...ssk } = carol.selfSigningKey!;
  carol.selfSigningKey = signWith(ssk, carol.userId, `ed25519:${carol.crossSigning!.masterKey.pub}`, newEd25519());
  w.remote.setUser(carol);
  hsAnswer = () => ({ device_keys: { [carol.userId]: {} } });
  expect((await w.refresh(carol.userId, alice)).status).toBe(202);
  const drops = logRecords().filter(
    (r) => r.level === "info" && r.userId === carol.userId && typeof r.part === "string",
  );
  expect(drops.map((r) => [r.part, r.reason])).toEqual([["self_signing_key", "not signed by the master key"]]);
});
