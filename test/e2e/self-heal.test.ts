// Self-healing with two real Synapses and a real client (matrix-js-sdk 37.5.0, Rust crypto) that
// never calls the refresh endpoint (docs/architecture.md "Self-healing"):
//   - no false alarms: a healthy exchange while the audit runs (logins; alice's and bob's js-sdk
//     clients trading Megolm-encrypted messages, whose room keys travel as Olm to-device messages
//     from known devices; an SAS verification of bob's device by alice's; a new device of bob's
//     that hs1 hears of) gives zero suspicions, zero heals and zero injected
//     device_lists.changed entries (helpers/healthy-exchange.ts);
//   - the audit: with hs1 left stale (hs2 sends nothing), alice's client lists bob's new device
//     within one short audit interval, and hs1 itself still does not;
//   - to-device: with the audit off, bob's new device (a js-sdk client of its own) sends alice one
//     Olm-encrypted to-device message and nothing else; her client lists the device within 2 s of
//     the /sync answer carrying it reaching her, the suspicion metric names the signal, and hs1
//     still does not list the device (Synapse does not resync on an Olm to-device message from an
//     unknown key: that was the proxy).
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  homeserverOverrides,
  restartHomeserver,
  startHomeservers,
  stopHomeserver,
  type Homeserver,
  type Homeservers,
} from "../../scripts/homeservers.ts";
import { sample, scrape } from "../integration/ops-helpers.ts";
import { login, waitFor } from "./helpers/client.ts";
import { sqlite } from "./helpers/db.ts";
import { uploadDeviceKeys } from "./helpers/e2ee.ts";
import { knowEachOther, megolmBothWays, verifyBySas } from "./helpers/healthy-exchange.ts";
import { startSdkClient, type SdkClient } from "./helpers/js-sdk.ts";
import { startHs1Proxy, type Hs1Proxy } from "./helpers/proxy.ts";
import { makeBobStale } from "./helpers/stale.ts";
import { keysView, meetAliceAndBob, type Story } from "./helpers/story.ts";

const log = (s: string): void => console.log(`[e2e self-heal] ${s}`);
const AUDIT_MS = 4_000;
let servers: Homeservers;
let hs1: Homeserver;
let hs2: Homeserver;
const clients: SdkClient[] = [];
const proxies: Hs1Proxy[] = [];

const metric = async (p: Hs1Proxy, name: string, labels?: Record<string, string>) =>
  sample(await scrape(p.running.opsAddress!), name, labels);
const total = async (p: Hs1Proxy, name: string) =>
  (await scrape(p.running.opsAddress!))
    .split("\n")
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .reduce((s, l) => s + Number(l.split(" ").pop()), 0);
beforeAll(async () => {
  servers = await startHomeservers({ log, lockTimeoutMs: 800_000 });
  ({ hs1, hs2 } = servers);
}, 900_000);

afterAll(async () => {
  for (const c of clients) c.stop();
  for (const p of proxies) await p.close();
  await servers?.stop();
}, 120_000);

describe("the audit, and no false alarms", () => {
  let proxy: Hs1Proxy;
  let story: Story;
  let alice: SdkClient;
  let bob: SdkClient | undefined;

  beforeAll(async () => {
    proxy = await startHs1Proxy(hs1, servers.caPath, {
      logLevel: "info",
      extra: [
        "--metrics-listen",
        "127.0.0.1:0",
        "--audit-interval-ms",
        String(AUDIT_MS),
        "--audit-max-per-second",
        "5",
        "--refresh-cache-ms",
        "1000",
        // The audit interval here (4 s) is far below the per-target limit's default period
        // (6 a minute): let the audit, not that limit, set how often bob is checked.
        "--rate-target-per-minute",
        "30",
      ],
    });
    proxies.push(proxy);
    story = await meetAliceAndBob(hs1, hs2, log, `a${Date.now() % 100000}`);
    const session = await login(proxy.url, story.alice.userId, story.alice.password, "alice's matrix-js-sdk (audit)");
    alice = await startSdkClient(session, proxy.url);
    clients.push(alice);
    await waitFor(
      "the client to download bob's keys",
      async () => ((await alice.knownDeviceIds(story.bob.userId)).length > 0 ? true : undefined),
      60_000,
      500,
    );
  }, 300_000);

  test("a healthy exchange while the audit runs: zero heals, zero injected entries", async ({ onTestFailed }) => {
    onTestFailed(() => {
      console.log([...alice.logs.slice(-40), ...(bob?.logs.slice(-40) ?? [])].join("\n"));
      console.log(proxy.logs.map((l) => JSON.stringify(l)).join("\n"));
    });
    // Logins on both servers; bob's new device is a js-sdk client with Rust crypto, as alice's
    // is. hs2 tells hs1 of it (federation works here) and hs1 names bob in alice's
    // device_lists.changed: her client re-queries by itself.
    await login(hs1.clientUrl, story.alice.userId, story.alice.password, "alice's second login");
    const bobSession = await login(hs2.clientUrl, story.bob.userId, story.bob.password, "bob's matrix-js-sdk");
    bob = await startSdkClient(bobSession, hs2.clientUrl);
    clients.push(bob);
    await knowEachOther(alice, bob);
    // Megolm-encrypted messages both ways: their room keys reach alice as Olm to-device
    // messages from bob's known device.
    const read = await megolmBothWays(alice, bob, story.roomId, 3);
    expect(read).toHaveLength(6);
    expect(
      alice.toDeviceArrivals.filter((a) => a.sender === story.bob.userId && a.type === "m.room.encrypted").length,
    ).toBeGreaterThanOrEqual(1);
    // A real SAS verification of bob's device by alice's, both confirming.
    const sas = await verifyBySas(alice, bob);
    expect(sas.a).toHaveLength(7);
    expect(sas.a).toEqual(sas.b);
    const status = await alice.client.getCrypto()!.getDeviceVerificationStatus(story.bob.userId, bobSession.deviceId);
    expect(status?.localVerified).toBe(true);
    const fromBob = new Set(alice.toDeviceArrivals.filter((a) => a.sender === story.bob.userId).map((a) => a.type));
    log(`to-device types alice received from bob: ${[...fromBob].sort().join(", ")}`);
    expect(fromBob).toContain("m.key.verification.ready");
    // bob logs in a new device with federation working: hs1 hears of it and names bob in
    // alice's device_lists.changed; her client re-queries. The audit runs meanwhile: a list the
    // homeserver already reported is not a heal.
    const bobSecond = await login(hs2.clientUrl, story.bob.userId, story.bob.password, "bob's second device (healthy)");
    await uploadDeviceKeys(bobSecond);
    await waitFor(
      "alice's client to list bob's second device by itself",
      async () => ((await alice.knownDeviceIds(story.bob.userId)).includes(bobSecond.deviceId) ? true : undefined),
      60_000,
      250,
    );
    // Two audit passes at least, after that.
    const checked = await metric(proxy, "resync_audit_checked_total");
    await waitFor(
      "the audit to check bob twice more",
      async () => ((await metric(proxy, "resync_audit_checked_total")) >= checked + 2 ? true : undefined),
      4 * AUDIT_MS,
      250,
    );
    expect(await metric(proxy, "resync_fresh_lists_total", { outcome: "unchanged" })).toBeGreaterThanOrEqual(1);
    // A heal here is a false alarm: for instance an audit check fetching hs2's list after bob's
    // device uploaded its keys, compared with hs1's answer from just before hs1 heard of that
    // upload (the audit leaves a user hs1 reported in the last 5 s to the next pass).
    expect(await total(proxy, "resync_heals_total")).toBe(0);
    // No false alarm: nothing in that traffic (room keys over Olm from bob's known device, the
    // verification's request, ready and start naming it) made the proxy suspect bob's list.
    const suspicions = (await scrape(proxy.running.opsAddress!))
      .split("\n")
      .filter((l) => l.startsWith("resync_suspicions_total{"));
    log(`suspicions during the healthy exchange: ${suspicions.join("; ") || "none"}`);
    expect(await total(proxy, "resync_suspicions_total")).toBe(0);
    expect(await total(proxy, "resync_device_list_injections_total")).toBe(0);
    expect(await proxy.running.services.store.countPending()).toBe(0);
    // bob's client has done its part; the next test restarts hs2 under it.
    bob.stop();
    clients.splice(clients.indexOf(bob), 1);
  }, 180_000);

  test("the audit heals a stale list within one interval, nobody calling anything; hs1 stays stale", async ({
    onTestFailed,
  }) => {
    onTestFailed(() => console.log(alice.logs.slice(-40).join("\n")));
    const stale = await makeBobStale({ hs1, hs2, alice: story.alice, bob: story.bob, log });
    hs2 = stale.hs2;
    const newId = stale.newDevice.deviceId;
    const started = Date.now();
    const ids = await waitFor(
      "alice's client to list bob's new device",
      async () => {
        const known = await alice.knownDeviceIds(story.bob.userId);
        return known.includes(newId) ? known : undefined;
      },
      3 * AUDIT_MS,
      100,
    );
    const tookMs = Date.now() - started;
    log(`alice's client listed bob's new device ${tookMs} ms after it was made (audit interval ${AUDIT_MS} ms)`);
    expect(tookMs).toBeLessThanOrEqual(AUDIT_MS + 1_500); // one interval, plus the client's own sync and query
    expect(ids).toEqual(expect.arrayContaining([story.bob.deviceId, newId]));
    expect(await metric(proxy, "resync_heals_total", { trigger: "audit" })).toBe(1);
    expect((await keysView(story.alice, story.bob.userId)).deviceIds).not.toContain(newId); // hs1, directly
    const heal = proxy.logs.find((l) => l.msg === "device list healed");
    expect(heal).toMatchObject({ userId: story.bob.userId, trigger: "audit", changes: `+1 device ${newId}` });
    // hs2 sends again from here on (the next describe needs federation both ways).
    hs2 = await restartHomeserver(hs2, { ...(await homeserverOverrides(hs2)), send_federation: true }, { log });
  }, 180_000);
});

describe("an Olm to-device message from an unknown device", () => {
  let proxy: Hs1Proxy;
  let story: Story;
  let alice: SdkClient;

  beforeAll(async () => {
    proxy = await startHs1Proxy(hs1, servers.caPath, {
      logLevel: "info",
      extra: ["--metrics-listen", "127.0.0.1:0", "--audit-interval-ms", "0"],
    });
    proxies.push(proxy);
    story = await meetAliceAndBob(hs1, hs2, log, `t${Date.now() % 100000}`);
    const session = await login(
      proxy.url,
      story.alice.userId,
      story.alice.password,
      "alice's matrix-js-sdk (to-device)",
    );
    alice = await startSdkClient(session, proxy.url);
    clients.push(alice);
    await waitFor(
      "the client to download bob's keys",
      async () => ((await alice.knownDeviceIds(story.bob.userId)).length > 0 ? true : undefined),
      60_000,
      500,
    );
  }, 300_000);

  test("heals the sender's list in alice's client; hs1 still lacks the device", async ({ onTestFailed }) => {
    onTestFailed(() => console.log(alice.logs.slice(-40).join("\n")));
    // bob's new device is a js-sdk client of its own (its keys made and uploaded by the Rust
    // crypto), logged in while hs2 sends hs1 nothing; then hs2's unsent device-list poke for hs1
    // is dropped and hs2 sends normally again, so the message below reaches hs1 but the device
    // list update never does (the "drop-pokes" recipe of helpers/stale.ts).
    const previous = await homeserverOverrides(hs2);
    hs2 = await restartHomeserver(hs2, { ...previous, send_federation: false }, { log });
    const bobNew = await login(
      hs2.clientUrl,
      story.bob.userId,
      story.bob.password,
      "bob's js-sdk device hs1 never hears of",
    );
    const bobClient = await startSdkClient(bobNew, hs2.clientUrl);
    clients.push(bobClient);
    await waitFor(
      "hs2 to list bob's new device",
      async () =>
        (await keysView(story.bob, story.bob.userId)).deviceIds.includes(bobNew.deviceId) ? true : undefined,
      30_000,
    );
    // The client keeps running through hs2's restart (its sync loop reconnects): stopping it
    // would free its Rust crypto machine for good.
    await stopHomeserver(hs2);
    const [dropped] = await sqlite(hs2.dbPath, [
      {
        sql: "DELETE FROM device_lists_outbound_pokes WHERE destination = ? AND user_id = ? AND NOT sent",
        params: [hs1.serverName, story.bob.userId],
      },
      {
        sql: "UPDATE device_lists_changes_in_room SET converted_to_destinations = TRUE WHERE user_id = ?",
        params: [story.bob.userId],
      },
    ]);
    log(`dropped ${dropped?.changes ?? 0} unsent device-list poke(s) for ${hs1.serverName}`);
    hs2 = await restartHomeserver(hs2, { ...previous, send_federation: true }, { log });
    expect((await keysView(story.alice, story.bob.userId)).deviceIds).not.toContain(bobNew.deviceId);

    // The one message: Olm-encrypted, to alice's client's device.
    const aliceDevice = alice.client.getDeviceId()!;
    const crypto = bobClient.client.getCrypto()!;
    await waitFor(
      "bob's new device to know alice's device",
      async () =>
        (await crypto.getUserDeviceInfo([story.alice.userId], true)).get(story.alice.userId)?.has(aliceDevice)
          ? true
          : undefined,
      60_000,
      500,
    );
    const batch = await crypto.encryptToDeviceMessages(
      "m.e2e.self_heal",
      [{ userId: story.alice.userId, deviceId: aliceDevice }],
      { note: "hello from a device hs1 does not list" },
    );
    expect(batch.batch).toHaveLength(1);
    await bobClient.client.queueToDevice(batch);

    // The clock starts when the /sync answer carrying the message reaches alice's client (the
    // proxy has read it on the way, and detection, the fetch from hs2 and her client's re-query
    // all follow from there).
    const arrived = await waitFor(
      "the message to reach alice's client in a /sync answer",
      async () => alice.toDeviceArrivals.find((a) => a.sender === story.bob.userId && a.type === "m.room.encrypted"),
      60_000,
      50,
    );
    const ids = await waitFor(
      "alice's client to list bob's new device",
      async () => {
        const known = await alice.knownDeviceIds(story.bob.userId);
        return known.includes(bobNew.deviceId) ? known : undefined;
      },
      30_000,
      50,
    );
    const tookMs = Date.now() - arrived.at;
    log(`alice's client listed bob's new device ${tookMs} ms after her /sync brought the message`);
    expect(tookMs).toBeLessThanOrEqual(2_000);
    expect(await metric(proxy, "resync_suspicions_total", { signal: "olm_unknown_sender_key" })).toBeGreaterThanOrEqual(
      1,
    );
    expect(ids).toContain(bobNew.deviceId);
    expect(await metric(proxy, "resync_heals_total", { trigger: "to_device" })).toBe(1);
    // hs1 itself still does not list the device: the proxy, not Synapse, fixed alice's view.
    const hs1Now = await keysView(story.alice, story.bob.userId);
    log(`hs1 lists bob's devices as ${hs1Now.deviceIds.join(", ")} (new: ${bobNew.deviceId})`);
    expect(hs1Now.deviceIds).not.toContain(bobNew.deviceId);
  }, 300_000);
});
