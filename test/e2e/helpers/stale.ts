// makeBobStale: leave hs1 holding an outdated copy of bob's device list, the bug MSC2638
// exists for. Recipe (tested in test/e2e/homeservers.test.ts against Synapse 1.163.2):
//   1. restart hs2 with `send_federation: false` (its main process then sends no
//      transactions; synapse/config/workers.py maps it to an empty federation_sender_instances),
//   2. bob logs in a new device and uploads its keys (optionally new cross-signing keys),
//   3. hs2 records a device-list poke for hs1 (device_lists_outbound_pokes, sent = 0) that
//      nobody sends, so hs1 keeps answering /keys/query from its cache.
// Why it lasts: Synapse's start-up catch-up (`_wake_destinations_needing_catchup`) only looks
// at unsent PDUs and to-device messages, and an incoming signed request only wakes the
// sender for a destination that was in backoff. So even with sending back on, the poke waits
// until hs2 next sends hs1 anything (a PDU, an EDU, another device change of bob's).
// method "drop-pokes" goes further: with hs2 stopped it deletes that unsent poke, then runs
// hs2 normally again. hs2 may then send hs1 anything. Bob's next device-list change reaches
// hs1 as an incremental update; it heals the dropped device only if hs1 sees a gap in bob's
// stream ids (prev_id) and resyncs, which depends on earlier history (seen both ways).
import {
  homeserverOverrides,
  restartHomeserver,
  stopHomeserver,
  type Homeserver,
} from "../../../scripts/homeservers.ts";
import { login, queriedDeviceIds, type Session } from "./client.ts";
import { uploadCrossSigning, uploadDeviceKeys, type CrossSigning, type UploadedDevice } from "./e2ee.ts";
import { sqlite } from "./db.ts";
import { fetchRemoteDevices, type FederationDevices } from "./federation.ts";

export interface MakeBobStaleOptions {
  hs1: Homeserver;
  hs2: Homeserver;
  /** A user on hs1 sharing a room with bob: hs1's view is checked through her. */
  alice: Session;
  /** Any session of bob's on hs2 (its password is used to log in a new device). */
  bob: Session;
  /** Also replace bob's cross-signing keys (signing the new device) during the stale window. */
  newCrossSigning?: boolean;
  /**
   * "federation-off" (default): hs2 keeps running with `send_federation: false`, so it sends
   * hs1 nothing at all (bob's messages do not reach hs1 either).
   * "drop-pokes": hs2 ends up running with its previous config (sending on) and may send hs1
   * messages, receipts and typing without healing; bob's next device change may or may not.
   * "restore": hs2 ends up with its previous config, but the poke is still queued: hs1 stays
   * stale only until hs2 next sends it anything (use when hs2's users stay silent).
   */
  method?: "federation-off" | "drop-pokes" | "restore";
  log?: (s: string) => void;
}

export interface StaleBob {
  /** hs2 after its restart(s): a new pid. Use this one from now on. */
  hs2: Homeserver;
  /** Bob's new device, which hs2 knows and hs1 does not. */
  newDevice: Session;
  newDeviceKeys: UploadedDevice;
  crossSigning?: CrossSigning;
  /** hs1's stale answer: bob's device ids before the new device. */
  hs1DeviceIds: string[];
  /** What a signed federation GET to hs2 (as hs1) returns: the fresh list. */
  remote: FederationDevices;
}

export async function makeBobStale(opts: MakeBobStaleOptions): Promise<StaleBob> {
  const { hs1, alice, bob } = opts;
  const log = opts.log ?? (() => {});
  const before = await queriedDeviceIds(alice, bob.userId);
  if (before.length === 0) throw new Error(`hs1 has no devices for ${bob.userId}: does alice share a room with bob?`);
  const previous = await homeserverOverrides(opts.hs2);
  let hs2 = await restartHomeserver(opts.hs2, { ...previous, send_federation: false }, { log });
  log(`${hs2.serverName} restarted with send_federation: false`);

  const newDevice = await login(hs2.clientUrl, bob.userId, bob.password, "bob's device hs1 never hears of");
  const newDeviceKeys = await uploadDeviceKeys(newDevice);
  const crossSigning = opts.newCrossSigning ? await uploadCrossSigning(newDevice, newDeviceKeys) : undefined;

  const fresh = await queriedDeviceIds(bob, bob.userId);
  if (!fresh.includes(newDevice.deviceId))
    throw new Error(`hs2 does not list bob's new device ${newDevice.deviceId}: ${fresh}`);
  const remote = await fetchRemoteDevices(hs1, hs2, bob.userId);
  if (remote.status !== 200 || !remote.body.devices.some((d) => d.device_id === newDevice.deviceId)) {
    throw new Error(
      `signed federation GET to hs2 lacks the new device: ${remote.status} ${JSON.stringify(remote.body)}`,
    );
  }

  const method = opts.method ?? "federation-off";
  if (method === "drop-pokes") {
    await stopHomeserver(hs2);
    const [dropped] = await sqlite(hs2.dbPath, [
      {
        sql: "DELETE FROM device_lists_outbound_pokes WHERE destination = ? AND user_id = ? AND NOT sent",
        params: [hs1.serverName, bob.userId],
      },
      // Unconverted room changes would be turned into fresh pokes on start-up.
      {
        sql: "UPDATE device_lists_changes_in_room SET converted_to_destinations = TRUE WHERE user_id = ?",
        params: [bob.userId],
      },
    ]);
    if (!dropped || dropped.changes < 1) throw new Error(`no unsent device-list poke for ${hs1.serverName} to drop`);
    log(`dropped ${dropped.changes} unsent device-list poke(s) for ${hs1.serverName}`);
  }
  if (method !== "federation-off") {
    hs2 = await restartHomeserver(hs2, previous, { log });
    log(`${hs2.serverName} restarted with its previous overrides (sending on)`);
  }
  const hs1DeviceIds = await queriedDeviceIds(alice, bob.userId);
  if (hs1DeviceIds.includes(newDevice.deviceId))
    throw new Error(`hs1 already knows bob's new device ${newDevice.deviceId}`);
  return { hs2, newDevice, newDeviceKeys, crossSigning, hs1DeviceIds, remote: remote.body };
}
