// The fix, proven against two real Synapses: hs1 holds a stale copy of bob's device list that
// nothing heals, and one MSC2638 refresh through the proxy gives alice the fresh list (keys
// and /sync) without touching hs1. Then the failure answers real software produces.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  restartHomeserver,
  startHomeservers,
  stopHomeserver,
  type Homeserver,
  type Homeservers,
} from "../../scripts/homeservers.ts";
import { login, sync, waitFor, type Session } from "./helpers/client.ts";
import { uploadDeviceKeys } from "./helpers/e2ee.ts";
import { refreshDevices, startHs1Proxy, type Hs1Proxy } from "./helpers/proxy.ts";
import { makeBobStale, type StaleBob } from "./helpers/stale.ts";
import {
  crossSigningKeyId,
  federationDeviceRequests,
  keysView,
  logOffset,
  meetAliceAndBob,
  type Story,
} from "./helpers/story.ts";

const log = (s: string): void => console.log(`[e2e resync] ${s}`);
let servers: Homeservers;
let hs1: Homeserver;
let hs2: Homeserver;
let proxy: Hs1Proxy;
let story: Story;
let stale: StaleBob;
/** alice's session through the proxy (same token and device, other base URL). */
let aliceViaProxy: Session;
let since: string;

describe("MSC2638 refresh through the proxy, with two real Synapses", () => {
  beforeAll(async () => {
    servers = await startHomeservers({ log, lockTimeoutMs: 800_000 }); // other e2e files hold them meanwhile
    ({ hs1, hs2 } = servers);
    proxy = await startHs1Proxy(hs1, servers.caPath, {
      logLevel: "info",
      extra: [
        // Every refresh in this story must reach hs2: no short-cache hits between steps.
        "--refresh-cache-ms",
        "0",
        // The stopped-server case waits for scheduled retries; keep them short.
        "--retry-initial-ms",
        "1000",
        "--retry-max-ms",
        "3000",
        "--retry-max-attempts",
        "60",
      ],
    });
  }, 900_000);

  afterAll(async () => {
    await proxy?.close();
    await servers?.stop();
  }, 120_000);

  test("steps 1–4: alice and bob share an encrypted room and hs1 caches bob's keys", async () => {
    story = await meetAliceAndBob(hs1, hs2, log);
    aliceViaProxy = { ...story.alice, clientUrl: proxy.url };
    // Through the proxy, before any refresh, alice sees exactly what hs1 says.
    const direct = await keysView(story.alice, story.bob.userId);
    const proxied = await keysView(aliceViaProxy, story.bob.userId);
    expect(proxied.deviceIds).toEqual([story.bob.deviceId]);
    expect(proxied).toMatchObject({ deviceIds: direct.deviceIds, masterKeyId: direct.masterKeyId });
    since = (await sync(aliceViaProxy)).next_batch;
  }, 300_000);

  test("steps 5–6: bob adds a device and resets cross-signing; hs1 never hears of it", async () => {
    // Recipe (docs/architecture.md "Reproducing staleness with two Synapses"): hs2 runs with `send_federation: false`, so
    // its main process has no federation sender at all (synapse/config/workers.py: an empty
    // federation_sender_instances). Catch-up cannot heal this: catch-up is the sender's own
    // work (it resends a destination's backlog when that destination comes back or sends us a
    // request), and there is no sender. hs1 never refetches on its own either: it resyncs a
    // remote list only when an incoming device-list EDU shows a gap in stream ids, or when a
    // previous resync failed (device_lists_remote_resync); no EDU ever arrives here.
    stale = await makeBobStale({ hs1, hs2, alice: story.alice, bob: story.bob, newCrossSigning: true, log });
    hs2 = stale.hs2;
    const hs1View = await keysView(story.alice, story.bob.userId);
    expect(hs1View.deviceIds).toEqual([story.bob.deviceId]);
    expect(hs1View.deviceIds).not.toContain(stale.newDevice.deviceId);
    expect(hs1View.masterKeyId).toBe(crossSigningKeyId(story.bobCrossSigning));
    // And bob's own server has the new state: the bug is hs1's copy, not bob's keys.
    expect(stale.remote.devices.map((d) => d.device_id).sort()).toEqual(
      [story.bob.deviceId, stale.newDevice.deviceId].sort(),
    );
    expect(crossSigningKeyId(stale.crossSigning!)).not.toBe(crossSigningKeyId(story.bobCrossSigning));
  }, 300_000);

  test("steps 7–9: one refresh through the proxy fixes alice's view; hs1 stays stale; hs2 accepted our signed request", async () => {
    const { alice, bob } = story;
    const offset = await logOffset(hs2.logPath);
    const answer = await refreshDevices(proxy.url, alice.accessToken, bob.userId);
    expect(answer).toEqual({ status: 202, body: {} });

    // Step 8: the proxy's /keys/query has the new device with its real keys, and the new
    // cross-signing keys.
    const fresh = await keysView(aliceViaProxy, bob.userId);
    expect(fresh.deviceIds).toEqual([bob.deviceId, stale.newDevice.deviceId].sort());
    expect(fresh.device(stale.newDevice.deviceId)?.keys).toEqual(stale.newDeviceKeys.deviceKeys.keys);
    expect(fresh.masterKeyId).toBe(crossSigningKeyId(stale.crossSigning!));
    expect(fresh.selfSigningKeyId).toBe(`ed25519:${stale.crossSigning!.selfSigning.publicKey}`);

    // alice's next /sync through the proxy names bob in device_lists.changed …
    const proxied = await sync(aliceViaProxy, since, 5_000);
    expect(proxied.device_lists?.changed ?? []).toContain(bob.userId);
    // … while hs1, asked directly from the same point, does not, and still serves the old list.
    const direct = await sync(alice, since, 0);
    expect(direct.device_lists?.changed ?? []).not.toContain(bob.userId);
    const hs1View = await keysView(alice, bob.userId);
    expect(hs1View.deviceIds).toEqual([bob.deviceId]);
    expect(hs1View.masterKeyId).toBe(crossSigningKeyId(story.bobCrossSigning));
    since = proxied.next_batch;

    // Step 9: hs2's access log shows the request, authenticated as hs1 (Synapse writes the
    // verified X-Matrix origin in braces), answered 200, sent by the proxy (its User-Agent),
    // not by hs1's own Synapse.
    const seen = await federationDeviceRequests(hs2.logPath, bob.userId, offset);
    log(`hs2 logged: ${seen.map((s) => s.line).join("\n")}`);
    expect(seen.filter((s) => s.userAgent === "matrix-resync-proxy")).toEqual([
      expect.objectContaining({ origin: hs1.serverName, status: 200 }),
    ]);
  }, 120_000);

  test("a refresh for a user hs2 does not have answers 404 M_NOT_FOUND", async () => {
    // Real Synapse answers the device query for any user id with 200 and no devices; the
    // proxy then asks the profile endpoint, which does say 404 (see src/federation/devices.ts).
    const answer = await refreshDevices(proxy.url, story.alice.accessToken, `@nobody:${hs2.serverName}`);
    expect(answer.status).toBe(404);
    expect(answer.body.errcode).toBe("M_NOT_FOUND");
  }, 60_000);

  test("hs2 stopped: 502/504 with a retry time; back up, the scheduled retry delivers the list", async () => {
    const { alice, bob } = story;
    // One more device hs1 never hears of (hs2 still sends nothing), so the delivery is visible.
    const third = await login(hs2.clientUrl, bob.userId, bob.password, "bob's third device");
    await uploadDeviceKeys(third);
    await stopHomeserver(hs2);

    const failed = await refreshDevices(proxy.url, alice.accessToken, bob.userId);
    log(`refresh with hs2 stopped: ${failed.status} ${JSON.stringify(failed.body)}`);
    expect([502, 504]).toContain(failed.status);
    expect(failed.body.errcode).toBe("M_UNKNOWN");
    expect(failed.body.next_retry_in_ms).toEqual(expect.any(Number));
    expect((await keysView(aliceViaProxy, bob.userId)).deviceIds).not.toContain(third.deviceId);

    hs2 = await restartHomeserver(hs2, undefined, { log }); // same overrides: still not sending
    const delivered = await waitFor(
      "the proxy's retry to deliver bob's third device",
      async () => {
        const view = await keysView(aliceViaProxy, bob.userId);
        return view.deviceIds.includes(third.deviceId) ? view : undefined;
      },
      120_000,
      500,
    );
    expect(delivered.deviceIds).toEqual([bob.deviceId, stale.newDevice.deviceId, third.deviceId].sort());
    expect(
      proxy.logs.some((l) => l.msg === "device list refresh failed; retry scheduled" && l.userId === bob.userId),
    ).toBe(true);
    const next = await sync(aliceViaProxy, since, 5_000);
    expect(next.device_lists?.changed ?? []).toContain(bob.userId);
    // hs1 itself still has only bob's first device.
    expect((await keysView(alice, bob.userId)).deviceIds).toEqual([bob.deviceId]);
  }, 300_000);
});
