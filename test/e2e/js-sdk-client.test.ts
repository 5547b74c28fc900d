// A real client drives the fix: matrix-js-sdk (37.5.0, Rust crypto) logged in as alice through
// the proxy, running its own sync loop. It already tracks bob; after one refresh its device
// list for bob gains the device hs1 never heard of, without any download being asked for:
// the proxy's device_lists.changed injection is what makes the client re-query.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startHomeservers, type Homeserver, type Homeservers } from "../../scripts/homeservers.ts";
import { api, login, waitFor } from "./helpers/client.ts";
import { startSdkClient, type SdkClient } from "./helpers/js-sdk.ts";
import { refreshDevices, startHs1Proxy, type Hs1Proxy } from "./helpers/proxy.ts";
import { makeBobStale } from "./helpers/stale.ts";
import { keysView, meetAliceAndBob, type Story } from "./helpers/story.ts";

const log = (s: string): void => console.log(`[e2e js-sdk] ${s}`);
let servers: Homeservers;
let hs1: Homeserver;
let hs2: Homeserver;
let proxy: Hs1Proxy;
let story: Story;
let alice: SdkClient | undefined;

/** On failure, what the SDK itself said (warnings and errors). */
const dumpSdkLog = (): void =>
  console.log(`[e2e js-sdk] SDK log tail:\n${alice?.logs.slice(-60).join("\n") ?? "(no client)"}`);

describe("matrix-js-sdk through the proxy", () => {
  beforeAll(async () => {
    servers = await startHomeservers({ log, lockTimeoutMs: 800_000 }); // other e2e files hold them meanwhile
    ({ hs1, hs2 } = servers);
    // --detect off: this file proves the endpoint alone (self-heal.test.ts proves detection,
    // which would otherwise heal bob on its own, for instance on hs1 listing hs2 in `failures`
    // while makeBobStale restarts hs2).
    proxy = await startHs1Proxy(hs1, servers.caPath, { logLevel: "warn", extra: ["--detect", "off"] });
    story = await meetAliceAndBob(hs1, hs2, log);
  }, 900_000);

  afterAll(async () => {
    alice?.stop();
    await proxy?.close();
    await servers?.stop();
  }, 120_000);

  test("the client tracks bob after its first sync and knows his one device", async ({ onTestFailed }) => {
    onTestFailed(dumpSdkLog);
    // A new device of alice's, logged in through the proxy as a client would be.
    const session = await login(proxy.url, story.alice.userId, story.alice.password, "alice's matrix-js-sdk");
    alice = await startSdkClient(session, proxy.url);
    // The encrypted room makes the Rust crypto track its members (RoomEncryptor calls
    // updateTrackedUsers) and download their keys by itself.
    const ids = await waitFor(
      "the client to download bob's keys",
      async () => {
        const known = await alice!.knownDeviceIds(story.bob.userId);
        return known.length > 0 ? known : undefined;
      },
      60_000,
      500,
    );
    expect(ids).toEqual([story.bob.deviceId]);
  }, 120_000);

  test("bob's new device, unknown to hs1, reaches the client after one refresh and no download", async ({
    onTestFailed,
  }) => {
    onTestFailed(dumpSdkLog);
    const c = alice!;
    const stale = await makeBobStale({ hs1, hs2, alice: story.alice, bob: story.bob, log });
    hs2 = stale.hs2;
    const newId = stale.newDevice.deviceId;
    expect((await keysView(story.alice, story.bob.userId)).deviceIds).not.toContain(newId);
    // The client has synced since bob's new device exists (it received this message) and
    // still lacks it: hs1 never names bob in device_lists.changed, so nothing prompts it.
    const marker = `synced after bob's new device ${Date.now()}`;
    await api(
      story.alice,
      "PUT",
      `/_matrix/client/v3/rooms/${encodeURIComponent(story.roomId)}/send/m.room.message/${Date.now()}`,
      { msgtype: "m.text", body: marker },
    );
    await waitFor(
      "the client to receive the marker message",
      async () => {
        const events = c.client.getRoom(story.roomId)?.getLiveTimeline().getEvents() ?? [];
        return events.some((e) => e.getContent().body === marker) ? true : undefined;
      },
      60_000,
    );
    expect(await c.knownDeviceIds(story.bob.userId)).toEqual([story.bob.deviceId]);

    const token = c.client.getAccessToken()!;
    expect(await refreshDevices(proxy.url, token, story.bob.userId)).toEqual({ status: 202, body: {} });

    // Only the client's own sync loop runs: no downloadKeys, no forced re-query.
    const ids = await waitFor(
      "the client to list bob's new device",
      async () => {
        const known = await c.knownDeviceIds(story.bob.userId);
        return known.includes(newId) ? known : undefined;
      },
      90_000,
      250,
    );
    expect(ids).toEqual([story.bob.deviceId, newId].sort());
    const device = (await c.client.getCrypto()!.getUserDeviceInfo([story.bob.userId]))
      .get(story.bob.userId)
      ?.get(newId);
    expect(device?.getFingerprint()).toBe(stale.newDeviceKeys.ed25519.publicKey);
    // hs1 itself still does not know it.
    expect((await keysView(story.alice, story.bob.userId)).deviceIds).not.toContain(newId);
  }, 300_000);
});
