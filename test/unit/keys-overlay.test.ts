import { describe, expect, it } from "vitest";
import { overlayKeysQuery } from "../../src/delivery/keys-overlay.ts";
import { serverOf } from "../../src/matrix/user-id.ts";
import type { DeviceSnapshot } from "../../src/matrix/device.ts";
import { crossSigningKeys, deviceIdsOf, deviceKeys, keysQueryAnswer, snapshotFor } from "../helpers/bodies.ts";

type Json = Record<string, any>;
const ALICE = "@alice:remote.test";
const BOB = "@bob:remote.test";
const CAROL = "@carol:other.test";
const ME = "@me:example.org";
const ME_USK = "ed25519:requesterUserSigningKeyPub";

const snaps = (...s: DeviceSnapshot[]) => new Map(s.map((x) => [x.userId, x]));
const clone = <T>(x: T): T => structuredClone(x);

describe("serverOf", () => {
  it("takes everything after the first colon, ports and IPv6 literals included", () => {
    expect(serverOf("@a:example.org")).toBe("example.org");
    expect(serverOf("@a:example.org:8448")).toBe("example.org:8448");
    expect(serverOf("@a:[::1]:8448")).toBe("[::1]:8448");
    expect(serverOf("nocolon")).toBe("");
  });
});

describe("overlayKeysQuery: devices", () => {
  it("replaces a requested user's devices with the snapshot's (new device in, deleted device out)", () => {
    const answer = keysQueryAnswer([ALICE], 2); // stale: devices 0,1 at generation 0
    const [d0, d1, d2] = deviceIdsOf(ALICE, 3) as [string, string, string];
    const snap = snapshotFor(ALICE, [d0, d2], { generation: 1 });
    const r = overlayKeysQuery(answer, { [ALICE]: [] }, snaps(snap));
    expect(r.overlaid).toEqual([ALICE]);
    const dk = answer.device_keys as Json;
    expect(Object.keys(dk[ALICE]).sort()).toEqual([d0, d2].sort());
    expect(dk[ALICE][d1]).toBeUndefined();
    expect(dk[ALICE][d2].keys).toEqual(snap.devices[d2]!.keys);
    expect(dk[ALICE][d0].keys).toEqual(deviceKeys(ALICE, d0, 1).keys);
  });

  it("filters to the requested device ids when the list is non-empty", () => {
    const ids = deviceIdsOf(ALICE, 4);
    const answer = keysQueryAnswer([ALICE], 4);
    overlayKeysQuery(
      answer,
      { [ALICE]: [ids[0]!, ids[2]!, "NOSUCHDEV"] },
      snaps(snapshotFor(ALICE, 4, { generation: 1 })),
    );
    expect(Object.keys((answer.device_keys as Json)[ALICE]).sort()).toEqual([ids[0], ids[2]].sort());
  });

  it("keeps the homeserver's display name, and the snapshot's where the homeserver has none", () => {
    const [d0, d1, d2] = deviceIdsOf(ALICE, 3) as [string, string, string];
    const answer: Json = {
      device_keys: {
        [ALICE]: {
          [d0]: deviceKeys(ALICE, d0, 0, "Alice's laptop"),
          [d1]: deviceKeys(ALICE, d1, 0), // the homeserver knows no name for d1
        },
      },
    };
    const snap = snapshotFor(ALICE, [d0, d1, d2]);
    snap.devices[d0]!.unsigned = { device_display_name: "remote name d0" };
    snap.devices[d1]!.unsigned = { device_display_name: "remote name d1" };
    snap.devices[d2]!.unsigned = { device_display_name: "remote name d2" };
    overlayKeysQuery(answer, { [ALICE]: [] }, snaps(snap));
    const got = answer.device_keys[ALICE];
    expect(got[d0].unsigned.device_display_name).toBe("Alice's laptop");
    expect(got[d1].unsigned.device_display_name).toBe("remote name d1");
    expect(got[d2].unsigned.device_display_name).toBe("remote name d2");
  });

  it("keeps extra signatures on an unchanged device key, drops them on a changed one", () => {
    const [d0, d1] = deviceIdsOf(ALICE, 2) as [string, string];
    const answer = keysQueryAnswer([ALICE], 2) as Json;
    for (const d of [d0, d1]) answer.device_keys[ALICE][d].signatures[ME] = { [ME_USK]: `sig-${d}` };
    const snap = snapshotFor(ALICE, 2);
    snap.devices[d1] = deviceKeys(ALICE, d1, 5); // d1 was re-keyed
    overlayKeysQuery(answer, { [ALICE]: [] }, snaps(snap));
    expect(answer.device_keys[ALICE][d0].signatures[ME]).toEqual({ [ME_USK]: `sig-${d0}` });
    expect(answer.device_keys[ALICE][d0].signatures[ALICE]).toEqual((snap.devices[d0] as Json).signatures[ALICE]);
    expect(answer.device_keys[ALICE][d1].signatures[ME]).toBeUndefined();
    expect(answer.device_keys[ALICE][d1].keys).toEqual(snap.devices[d1]!.keys);
  });

  it("creates device_keys / master_keys / self_signing_keys when the answer has none", () => {
    const answer: Json = {};
    const snap = snapshotFor(ALICE, 2);
    const r = overlayKeysQuery(answer, { [ALICE]: [] }, snaps(snap));
    expect(r.overlaid).toEqual([ALICE]);
    expect(Object.keys(answer.device_keys[ALICE])).toHaveLength(2);
    expect(answer.master_keys[ALICE]).toEqual(snap.masterKey);
    expect(answer.self_signing_keys[ALICE]).toEqual(snap.selfSigningKey);
  });

  it("does not mutate the snapshot, and the answer does not alias it", () => {
    const answer = keysQueryAnswer([ALICE], 2, { displayNames: true }) as Json;
    answer.master_keys[ALICE].signatures[ME] = { [ME_USK]: "mine" };
    const snap = snapshotFor(ALICE, 2);
    const before = clone(snap);
    overlayKeysQuery(answer, { [ALICE]: [] }, snaps(snap));
    answer.device_keys[ALICE][deviceIdsOf(ALICE, 1)[0]!].keys.tampered = "x";
    answer.master_keys[ALICE].usage.push("tampered");
    expect(snap).toEqual(before);
  });

  it("keeps a device whose id is __proto__ as a real entry", () => {
    const snap: DeviceSnapshot = {
      userId: ALICE,
      streamId: 1,
      fetchedAt: 0,
      devices: JSON.parse(`{"__proto__": ${JSON.stringify(deviceKeys(ALICE, "__proto__"))}}`),
    };
    const answer = JSON.parse(
      `{"device_keys": {"${ALICE}": {"__proto__": ${JSON.stringify(deviceKeys(ALICE, "__proto__", 0, "n"))}}}}`,
    );
    overlayKeysQuery(answer, { [ALICE]: [] }, snaps(snap));
    const out = JSON.parse(JSON.stringify(answer));
    expect(Object.keys(out.device_keys[ALICE])).toEqual(["__proto__"]);
    expect(out.device_keys[ALICE].__proto__.unsigned.device_display_name).toBe("n");
  });

  it("copies a __proto__ member inside a device's JSON as data, byte for byte", () => {
    const dev = deviceKeys(ALICE, "D1");
    const snap: DeviceSnapshot = {
      userId: ALICE,
      streamId: 1,
      fetchedAt: 0,
      devices: JSON.parse(`{"D1": ${JSON.stringify(dev).replace(/^\{/, '{"__proto__":{"polluted":true},')}}`),
    };
    const answer = JSON.parse(`{"device_keys": {}}`);
    overlayKeysQuery(answer, { [ALICE]: [] }, snaps(snap));
    const served = answer.device_keys[ALICE].D1;
    expect(Object.hasOwn(served, "__proto__")).toBe(true);
    expect(JSON.parse(JSON.stringify(served)).__proto__).toEqual({ polluted: true });
    expect(({} as { polluted?: boolean }).polluted).toBeUndefined();
    expect(Object.getPrototypeOf(served)).toBe(Object.prototype);
  });
});

describe("overlayKeysQuery: cross-signing keys", () => {
  it("keeps the requester's signature on an unchanged master key, never overwriting the owner's", () => {
    const answer = keysQueryAnswer([ALICE], 1) as Json;
    const ownerKeyId = Object.keys(answer.master_keys[ALICE].signatures[ALICE])[0]!;
    answer.master_keys[ALICE].signatures[ALICE][ownerKeyId] = "stale-owner-sig";
    answer.master_keys[ALICE].signatures[ME] = { [ME_USK]: "i-verified-alice" };
    const snap = snapshotFor(ALICE, 1);
    overlayKeysQuery(answer, { [ALICE]: [] }, snaps(snap));
    expect(answer.master_keys[ALICE].signatures[ME]).toEqual({ [ME_USK]: "i-verified-alice" });
    expect(answer.master_keys[ALICE].signatures[ALICE][ownerKeyId]).toBe(
      (snap.masterKey!.signatures as Json)[ALICE][ownerKeyId],
    );
  });

  it("does NOT carry old signatures onto a changed master key (identity reset)", () => {
    const answer = keysQueryAnswer([ALICE], 1) as Json;
    answer.master_keys[ALICE].signatures[ME] = { [ME_USK]: "i-verified-the-OLD-key" };
    answer.self_signing_keys[ALICE].signatures[ME] = { [ME_USK]: "odd-but-old" };
    const snap = snapshotFor(ALICE, 1, { generation: 1 });
    overlayKeysQuery(answer, { [ALICE]: [] }, snaps(snap));
    expect(answer.master_keys[ALICE]).toEqual(snap.masterKey);
    expect(answer.master_keys[ALICE].signatures[ME]).toBeUndefined();
    expect(answer.self_signing_keys[ALICE]).toEqual(snap.selfSigningKey);
  });

  it("leaves the homeserver's master and self-signing keys alone when the snapshot has none", () => {
    const answer = keysQueryAnswer([ALICE], 1) as Json;
    const before = clone(answer);
    overlayKeysQuery(answer, { [ALICE]: [] }, snaps(snapshotFor(ALICE, 1, { generation: 3, crossSigning: false })));
    expect(answer.master_keys).toEqual(before.master_keys);
    expect(answer.self_signing_keys).toEqual(before.self_signing_keys);
    expect(answer.device_keys[ALICE]).not.toEqual(before.device_keys[ALICE]);
  });

  it("never touches user_signing_keys", () => {
    const answer = keysQueryAnswer([ALICE], 1) as Json;
    answer.user_signing_keys = {
      [ME]: { user_id: ME, usage: ["user_signing"], keys: { [ME_USK]: "pub" } },
      [ALICE]: { planted: true },
    };
    const before = clone(answer.user_signing_keys);
    overlayKeysQuery(answer, { [ALICE]: [], [ME]: [] }, snaps(snapshotFor(ALICE, 1, { generation: 1 })));
    expect(answer.user_signing_keys).toEqual(before);
  });
});

describe("overlayKeysQuery: failures and other users", () => {
  it("keeps failures[server] while one requested user of that server was not overlaid", () => {
    const answer: Json = {
      device_keys: {},
      failures: { "remote.test": { status: 503 }, "other.test": { status: 503 } },
    };
    overlayKeysQuery(answer, { [ALICE]: [], [BOB]: [], [CAROL]: [] }, snaps(snapshotFor(ALICE, 1)));
    expect(Object.keys(answer.failures).sort()).toEqual(["other.test", "remote.test"]);
  });

  it("drops failures[server] once every requested user of that server was overlaid, and only that one", () => {
    const answer: Json = {
      failures: { "remote.test": { status: 503 }, "other.test": { status: 503 }, "unasked.test": {} },
    };
    const r = overlayKeysQuery(
      answer,
      { [ALICE]: [], [BOB]: [], [CAROL]: [] },
      snaps(snapshotFor(ALICE, 1), snapshotFor(BOB, 1)),
    );
    expect(r.overlaid.sort()).toEqual([ALICE, BOB]);
    expect(answer.failures).toEqual({ "other.test": { status: 503 }, "unasked.test": {} });
  });

  it("leaves unrequested and snapshot-less users untouched", () => {
    const answer = keysQueryAnswer([ALICE, CAROL], 2) as Json;
    const before = clone(answer);
    const dave = "@dave:remote.test"; // has a snapshot but was not requested
    const r = overlayKeysQuery(
      answer,
      { [ALICE]: [], [CAROL]: [] },
      snaps(snapshotFor(ALICE, 3, { generation: 1 }), snapshotFor(dave, 1)),
    );
    expect(r.overlaid).toEqual([ALICE]);
    expect(answer.device_keys[CAROL]).toEqual(before.device_keys[CAROL]);
    expect(answer.master_keys[CAROL]).toEqual(before.master_keys[CAROL]);
    expect(answer.self_signing_keys[CAROL]).toEqual(before.self_signing_keys[CAROL]);
    expect(answer.device_keys[dave]).toBeUndefined();
    expect(answer.master_keys[dave]).toBeUndefined();
  });
});

describe("overlayKeysQuery: caughtUp", () => {
  // The homeserver caught up: same device ids and keys, same cross-signing keys. Display names
  // and extra signatures may differ (they are not key material).
  const caughtUpAnswer = () => {
    const a = keysQueryAnswer([ALICE], 3, { generation: 2 }) as Json;
    a.master_keys[ALICE].signatures[ME] = { [ME_USK]: "mine" };
    return a;
  };
  const fresh = () => snapshotFor(ALICE, 3, { generation: 2 });
  const run = (a: Json, s = fresh(), ids: string[] = []) => overlayKeysQuery(a, { [ALICE]: ids }, snaps(s)).caughtUp;

  it("reports a user whose homeserver answer equals the snapshot", () => {
    expect(run(caughtUpAnswer())).toEqual([ALICE]);
  });

  it("does not report a stale device, an extra device or a missing device", () => {
    const [d0] = deviceIdsOf(ALICE, 1) as [string];
    const stale = caughtUpAnswer();
    stale.device_keys[ALICE][d0] = deviceKeys(ALICE, d0, 1);
    expect(run(stale)).toEqual([]);
    const extra = caughtUpAnswer();
    extra.device_keys[ALICE].EXTRADEVICE = deviceKeys(ALICE, "EXTRADEVICE", 2);
    expect(run(extra)).toEqual([]);
    const missing = caughtUpAnswer();
    delete missing.device_keys[ALICE][d0];
    expect(run(missing)).toEqual([]);
    const none = caughtUpAnswer();
    delete none.device_keys[ALICE];
    expect(run(none)).toEqual([]);
  });

  it("does not report a different or missing master / self-signing key", () => {
    const oldMaster = caughtUpAnswer();
    oldMaster.master_keys[ALICE] = crossSigningKeys(ALICE, 1).master;
    expect(run(oldMaster)).toEqual([]);
    const oldSsk = caughtUpAnswer();
    oldSsk.self_signing_keys[ALICE] = crossSigningKeys(ALICE, 1).selfSigning;
    expect(run(oldSsk)).toEqual([]);
    const noMaster = caughtUpAnswer();
    delete noMaster.master_keys;
    expect(run(noMaster)).toEqual([]);
  });

  it("treats the same keys in another JSON key order as the same key material", () => {
    const a = caughtUpAnswer();
    for (const dev of Object.values(a.device_keys[ALICE]) as Json[]) {
      dev.keys = Object.fromEntries(Object.entries(dev.keys).reverse());
      dev.signatures[ME] = { [ME_USK]: "kept" };
    }
    expect(run(a)).toEqual([ALICE]);
    for (const dev of Object.values(a.device_keys[ALICE]) as Json[])
      expect(dev.signatures[ME]).toEqual({ [ME_USK]: "kept" });
  });

  it("does not compare a cross-signing key the snapshot lacks (the overlay leaves it anyway)", () => {
    expect(run(caughtUpAnswer(), snapshotFor(ALICE, 3, { generation: 2, crossSigning: false }))).toEqual([ALICE]);
  });

  it("never reports from a request filtered to some devices", () => {
    expect(run(caughtUpAnswer(), fresh(), deviceIdsOf(ALICE, 3))).toEqual([]);
  });
});

// A device that failed validation in the remote's answer (say a strict remote dropped its signed
// `"dehydrated": true`, so its self-signature no longer verifies) is named in
// snapshot.invalidDevices. The homeserver's copy of it is shown as the homeserver has it; one the
// homeserver does not have is left out; and it does not keep the overlay alive forever.
describe("overlayKeysQuery: devices that failed validation in the remote's answer", () => {
  const [d0, d1, bad] = deviceIdsOf(ALICE, 3) as [string, string, string];
  const hsBad = () => ({ ...deviceKeys(ALICE, bad, 0, "Backup device"), dehydrated: true });
  /** The remote's answer verified d0 and d1 at generation 1; `bad` failed validation. */
  const snap = (invalid: string[] = [bad]) => ({
    ...snapshotFor(ALICE, [d0, d1], { generation: 1 }),
    invalidDevices: invalid,
  });
  /** The homeserver: d0 stale (generation 0), and its own copy of `bad`. */
  const staleAnswer = () => {
    const a = keysQueryAnswer([ALICE], 1) as Json;
    a.device_keys[ALICE][bad] = hsBad();
    return a;
  };

  it("shows the homeserver's copy of an invalid device it already serves, untouched", () => {
    const a = staleAnswer();
    overlayKeysQuery(a, { [ALICE]: [] }, snaps(snap()));
    const dk = a.device_keys[ALICE];
    expect(Object.keys(dk).sort()).toEqual([d0, d1, bad].sort());
    expect(dk[bad]).toEqual(hsBad());
    expect(dk[d0].keys).toEqual(deviceKeys(ALICE, d0, 1).keys); // the others still come from the snapshot
  });

  it("leaves out an invalid device the homeserver does not have (new and invalid)", () => {
    const a = keysQueryAnswer([ALICE], 1) as Json;
    overlayKeysQuery(a, { [ALICE]: [] }, snaps(snap()));
    expect(Object.keys(a.device_keys[ALICE]).sort()).toEqual([d0, d1].sort());
  });

  it("honours a request for some devices", () => {
    const only = staleAnswer();
    overlayKeysQuery(only, { [ALICE]: [bad] }, snaps(snap()));
    expect(only.device_keys[ALICE]).toEqual({ [bad]: hsBad() });
    const others = staleAnswer();
    overlayKeysQuery(others, { [ALICE]: [d1] }, snaps(snap()));
    expect(Object.keys(others.device_keys[ALICE])).toEqual([d1]);
  });

  it("still hides a homeserver device the remote did not list at all", () => {
    const a = staleAnswer();
    a.device_keys[ALICE].GONE = deviceKeys(ALICE, "GONE");
    overlayKeysQuery(a, { [ALICE]: [] }, snaps(snap()));
    expect(a.device_keys[ALICE].GONE).toBeUndefined();
  });

  it("reports caughtUp once the homeserver serves the verified devices, with or without the invalid one", () => {
    const caught = keysQueryAnswer([ALICE], 2, { generation: 1 }) as Json;
    caught.device_keys[ALICE][bad] = hsBad();
    expect(overlayKeysQuery(caught, { [ALICE]: [] }, snaps(snap())).caughtUp).toEqual([ALICE]);
    const without = keysQueryAnswer([ALICE], 2, { generation: 1 }) as Json;
    expect(overlayKeysQuery(without, { [ALICE]: [] }, snaps(snap())).caughtUp).toEqual([ALICE]);
    // Not while a verified device is stale, nor with a device the remote never listed.
    expect(overlayKeysQuery(staleAnswer(), { [ALICE]: [] }, snaps(snap())).caughtUp).toEqual([]);
    const extra = keysQueryAnswer([ALICE], 2, { generation: 1 }) as Json;
    extra.device_keys[ALICE].GONE = deviceKeys(ALICE, "GONE");
    expect(overlayKeysQuery(extra, { [ALICE]: [] }, snaps(snap())).caughtUp).toEqual([]);
  });
});

describe("overlayKeysQuery at realistic size: 1000 devices", () => {
  const N = 1000;
  const ids = deviceIdsOf(ALICE, N);
  // The homeserver's copy is stale for the second half (re-keyed remotely); the requester has
  // signed every device it knows (a signature the fresh copy cannot carry).
  const staleAnswer = () => {
    const a = keysQueryAnswer([ALICE, CAROL], { [ALICE]: N, [CAROL]: 3 }) as Json;
    for (const id of ids) a.device_keys[ALICE][id].signatures[ME] = { [ME_USK]: `me-${id}` };
    return a;
  };
  const snap = snapshotFor(ALICE, N);
  for (const id of ids.slice(N / 2)) snap.devices[id] = deviceKeys(ALICE, id, 1);

  it("overlays all 1000 devices, keeping names, and signatures only on unchanged keys", () => {
    const answer = staleAnswer();
    const r = overlayKeysQuery(answer, { [ALICE]: [], [CAROL]: [] }, snaps(snap));
    expect(r).toEqual({ overlaid: [ALICE], caughtUp: [] });
    const got = JSON.parse(JSON.stringify(answer)).device_keys[ALICE];
    expect(Object.keys(got)).toHaveLength(N);
    ids.forEach((id, i) => {
      expect(got[id].keys).toEqual((snap.devices[id] as Json).keys);
      expect(got[id].unsigned.device_display_name).toBe(`alice's phone ${id}`);
      expect(got[id].signatures[ME]).toEqual(i < N / 2 ? { [ME_USK]: `me-${id}` } : undefined);
    });
  });

  it("filters 1000 devices to 300 requested ids", () => {
    const answer = staleAnswer();
    const want = ids.filter((_, i) => i % 10 < 3);
    overlayKeysQuery(answer, { [ALICE]: want }, snaps(snap));
    expect(Object.keys(answer.device_keys[ALICE]).sort()).toEqual([...want].sort());
  });

  it("reports caughtUp once the homeserver serves the same 1000 devices", () => {
    const answer = staleAnswer();
    for (const id of ids.slice(N / 2)) answer.device_keys[ALICE][id] = deviceKeys(ALICE, id, 1, "renamed");
    expect(overlayKeysQuery(answer, { [ALICE]: [] }, snaps(snap)).caughtUp).toEqual([ALICE]);
  });
});
