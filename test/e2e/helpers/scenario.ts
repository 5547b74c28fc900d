// The shared starting point of the e2e scenarios: alice on hs1 and bob on hs2 share an
// encrypted room, bob has uploaded device keys, and hs1 has bob's device list cached.
import type { Homeserver } from "../../../scripts/homeservers.ts";
import { createRoom, join, joinedMembers, queriedDeviceIds, register, waitFor, type Session } from "./client.ts";
import { uploadDeviceKeys, type UploadedDevice } from "./e2ee.ts";

export interface AliceAndBob {
  alice: Session;
  bob: Session;
  bobDevice: UploadedDevice;
  roomId: string;
}

export async function aliceAndBob(
  hs1: Homeserver,
  hs2: Homeserver,
  opts: { suffix?: string } = {},
): Promise<AliceAndBob> {
  const suffix = opts.suffix ?? "";
  const alice = await register(hs1.clientUrl, `alice${suffix}`);
  const bob = await register(hs2.clientUrl, `bob${suffix}`);
  await uploadDeviceKeys(alice);
  const bobDevice = await uploadDeviceKeys(bob);
  const roomId = await createRoom(alice, [bob.userId]);
  await joinOverFederation(alice, bob, roomId, hs1.serverName);
  // hs1 now shares a room with bob, so it caches his device list (fetched over federation).
  await waitFor("hs1 to list bob's device", async () =>
    (await queriedDeviceIds(alice, bob.userId)).includes(bob.deviceId) ? true : undefined,
  );
  return { alice, bob, bobDevice, roomId };
}

/** bob (hs2) joins alice's room; the invite travels over federation, so retry until it lands. */
export async function joinOverFederation(alice: Session, bob: Session, roomId: string, via: string): Promise<void> {
  await waitFor(
    "bob's join over federation",
    async () => {
      await join(bob, roomId, [via]);
      return true;
    },
    60_000,
    500,
  );
  await waitFor("hs1 to see bob joined", async () =>
    (await joinedMembers(alice, roomId)).includes(bob.userId) ? true : undefined,
  );
}
