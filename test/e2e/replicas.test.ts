// The real-Synapse story of resync.test.ts, with two compiled replicas of the proxy on one
// PostgreSQL (docs/scaling.md) in front of hs1, and alice's requests alternating between
// them: every call goes to the other replica than the one before. hs1 holds a stale copy of
// bob's device list; one refresh through one replica gives alice the fresh list on the other
// (keys and /sync), and a retry scheduled by one is delivered whichever replica serves alice.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  restartHomeserver,
  startHomeservers,
  stopHomeserver,
  type Homeserver,
  type Homeservers,
} from "../../scripts/homeservers.ts";
import { startPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { type Replica, startReplicas, stopReplicas } from "../helpers/replicas.ts";
import { login, sync, waitFor, type Session } from "./helpers/client.ts";
import { uploadDeviceKeys } from "./helpers/e2ee.ts";
import { refreshDevices } from "./helpers/proxy.ts";
import { makeBobStale, type StaleBob } from "./helpers/stale.ts";
import { crossSigningKeyId, keysView, meetAliceAndBob, type Story } from "./helpers/story.ts";

const log = (s: string): void => console.log(`[e2e replicas] ${s}`);
let servers: Homeservers;
let hs1: Homeserver;
let hs2: Homeserver;
let pg: TestPostgres;
let replicas: Replica[];
let story: Story;
let stale: StaleBob;
let since: string;
const urls = () => replicas.map((r) => `http://127.0.0.1:${r.port}`);
/** Which replica each of alice's calls through the proxies went to, in order. */
const used: string[] = [];

/** alice's session, each request to the other replica than the one before. */
function alternating(s: Session): Session {
  let n = 0;
  return {
    ...s,
    get clientUrl() {
      const url = urls()[n++ % 2]!;
      used.push(url);
      return url;
    },
  };
}
let aliceViaProxies: Session;
/** Refreshes alternate too. */
let refreshes = 0;
const refresh = (token: string, userId: string) => refreshDevices(urls()[refreshes++ % 2]!, token, userId);

describe("MSC2638 refresh through two replicas on PostgreSQL, with two real Synapses", () => {
  beforeAll(async () => {
    servers = await startHomeservers({ log, lockTimeoutMs: 800_000 });
    ({ hs1, hs2 } = servers);
    pg = await startPostgres();
    const database = await pg.createDatabase("e2e_replicas");
    replicas = await startReplicas(2, {
      database,
      upstream: hs1.clientUrl,
      serverName: hs1.serverName,
      signingKey: hs1.signingKeyPath,
      caPath: servers.caPath,
      // hs2 is "localhost:8482": loopback, refused unless allowed (docs/architecture.md "Federation").
      allowCidrs: "127.0.0.0/8,::1/128",
      extra: [
        "--refresh-cache-ms",
        "0",
        "--retry-initial-ms",
        "1000",
        "--retry-max-ms",
        "3000",
        "--retry-max-attempts",
        "60",
        // This file proves the endpoint and the retry on replicas; detection would heal bob on
        // its own (self-heal.test.ts proves it).
        "--detect",
        "off",
      ],
    });
  }, 900_000);

  afterAll(async () => {
    if (replicas) await stopReplicas(replicas);
    await pg?.close();
    await servers?.stop();
  }, 120_000);

  test("alice and bob share an encrypted room; through either replica alice sees hs1's view", async () => {
    story = await meetAliceAndBob(hs1, hs2, log);
    aliceViaProxies = alternating(story.alice);
    const direct = await keysView(story.alice, story.bob.userId);
    for (let i = 0; i < 2; i++) {
      const proxied = await keysView(aliceViaProxies, story.bob.userId);
      expect(proxied.deviceIds).toEqual([story.bob.deviceId]);
      expect(proxied).toMatchObject({ deviceIds: direct.deviceIds, masterKeyId: direct.masterKeyId });
    }
    since = (await sync(aliceViaProxies)).next_batch;
  }, 300_000);

  test("bob adds a device and resets cross-signing; hs1 never hears of it", async () => {
    stale = await makeBobStale({ hs1, hs2, alice: story.alice, bob: story.bob, newCrossSigning: true, log });
    hs2 = stale.hs2;
    const hs1View = await keysView(story.alice, story.bob.userId);
    expect(hs1View.deviceIds).toEqual([story.bob.deviceId]);
    expect(hs1View.masterKeyId).toBe(crossSigningKeyId(story.bobCrossSigning));
  }, 300_000);

  test("one refresh through one replica fixes alice's view on both; /sync on the other names bob once", async () => {
    const { alice, bob } = story;
    expect(await refresh(alice.accessToken, bob.userId)).toEqual({ status: 202, body: {} });
    for (let i = 0; i < 2; i++) {
      const fresh = await keysView(aliceViaProxies, bob.userId);
      expect(fresh.deviceIds).toEqual([bob.deviceId, stale.newDevice.deviceId].sort());
      expect(fresh.device(stale.newDevice.deviceId)?.keys).toEqual(stale.newDeviceKeys.deviceKeys.keys);
      expect(fresh.masterKeyId).toBe(crossSigningKeyId(stale.crossSigning!));
    }
    const proxied = await sync(aliceViaProxies, since, 5_000);
    expect(proxied.device_lists?.changed ?? []).toContain(bob.userId);
    // The next sync, on the other replica, acknowledges it: bob is not named again.
    const next = await sync(aliceViaProxies, proxied.next_batch, 0);
    expect(next.device_lists?.changed ?? []).not.toContain(bob.userId);
    since = next.next_batch;
    // hs1 itself still serves the old list.
    expect((await keysView(alice, bob.userId)).deviceIds).toEqual([bob.deviceId]);
  }, 120_000);

  test("hs2 stopped: the refresh fails with a retry time; back up, a replica's retry delivers through both", async () => {
    const { alice, bob } = story;
    const third = await login(hs2.clientUrl, bob.userId, bob.password, "bob's third device");
    await uploadDeviceKeys(third);
    await stopHomeserver(hs2);
    const failed = await refresh(alice.accessToken, bob.userId);
    log(`refresh with hs2 stopped: ${failed.status} ${JSON.stringify(failed.body)}`);
    expect([502, 504]).toContain(failed.status);
    expect(failed.body.next_retry_in_ms).toEqual(expect.any(Number));

    hs2 = await restartHomeserver(hs2, undefined, { log });
    const delivered = await waitFor(
      "a replica's retry to deliver bob's third device",
      async () => {
        const view = await keysView(aliceViaProxies, bob.userId);
        return view.deviceIds.includes(third.deviceId) ? view : undefined;
      },
      120_000,
      500,
    );
    expect(delivered.deviceIds).toEqual([bob.deviceId, stale.newDevice.deviceId, third.deviceId].sort());
    // Both replicas serve it, and alice's next sync (on whichever) names bob.
    for (let i = 0; i < 2; i++)
      expect((await keysView(aliceViaProxies, bob.userId)).deviceIds).toContain(third.deviceId);
    const next = await sync(aliceViaProxies, since, 5_000);
    expect(next.device_lists?.changed ?? []).toContain(bob.userId);
    expect(replicas.some((r) => r.log().includes("device list refresh failed; retry scheduled"))).toBe(true);
    // alice's requests really did alternate.
    expect(used.length).toBeGreaterThan(8);
    expect(used.every((u, i) => i === 0 || u !== used[i - 1])).toBe(true);
  }, 300_000);
});
