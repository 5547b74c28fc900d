// Validation of federation device-list answers. Fixtures are signed by test/helpers/fake-devices.ts,
// which shares no signing code with src/, so these tests also cross-check src's verifier.
import { describe, expect, it } from "vitest";
import { MAX_DEVICES, validateUserDevices } from "../../src/federation/device-validate.ts";
import { logDroppedParts, serverNameOf } from "../../src/federation/devices.ts";
import { FederationError } from "../../src/federation/errors.ts";
import {
  devicesAnswer,
  type Json,
  makeCrossSigningKey,
  makeDevice,
  makeUser,
  newEd25519,
  signWith,
} from "../helpers/fake-devices.ts";

const ALICE = "@alice:remote.test";
const NOW = 1_700_000_000_000;

function validate(body: unknown, target = ALICE) {
  return validateUserDevices(body, target, NOW);
}

function invalid(body: unknown, target = ALICE): FederationError {
  try {
    validate(body, target);
  } catch (e) {
    expect(e).toBeInstanceOf(FederationError);
    expect((e as FederationError).kind).toBe("invalid");
    return e as FederationError;
  }
  throw new Error("expected the answer to be rejected");
}

describe("a well-formed answer", () => {
  it("keeps every device and both cross-signing keys, as received", () => {
    const u = makeUser(ALICE, { devices: ["A", "B"], streamId: 42 });
    const { snapshot, dropped, remoteEmpty } = validate(devicesAnswer(u));
    expect(dropped).toEqual({ devices: 0, masterKey: false, selfSigningKey: false, parts: [], unlisted: 0 });
    expect(remoteEmpty).toBe(false);
    expect(snapshot).toEqual({
      userId: ALICE,
      streamId: 42,
      fetchedAt: NOW,
      devices: { A: u.devices[0]!.keys, B: u.devices[1]!.keys },
      masterKey: u.masterKey,
      selfSigningKey: u.selfSigningKey,
    });
  });

  it("accepts null and absent cross-signing keys without counting them as dropped", () => {
    const u = makeUser(ALICE, { crossSigning: false });
    for (const body of [devicesAnswer(u), { user_id: ALICE, stream_id: 1, devices: u.devices }]) {
      const { snapshot, dropped } = validate(body);
      expect(snapshot.masterKey).toBeUndefined();
      expect(snapshot.selfSigningKey).toBeUndefined();
      expect("masterKey" in snapshot).toBe(false);
      expect(dropped).toEqual({ devices: 0, masterKey: false, selfSigningKey: false, parts: [], unlisted: 0 });
      expect(Object.keys(snapshot.devices)).toEqual(["DEV0"]);
    }
  });

  it("reports an empty answer as remoteEmpty, but not one whose devices were all dropped", () => {
    expect(
      validate({ user_id: ALICE, stream_id: 0, devices: [], master_key: null, self_signing_key: null }).remoteEmpty,
    ).toBe(true);
    const u = makeUser(ALICE, { crossSigning: false });
    (u.devices[0]!.keys as Json).user_id = "@mallory:remote.test";
    const r = validate(devicesAnswer(u));
    expect(r.remoteEmpty).toBe(false);
    expect(r.dropped.devices).toBe(1);
  });

  it("never keeps a user-signing key", () => {
    const u = makeUser(ALICE);
    const body = { ...devicesAnswer(u), user_signing_key: makeCrossSigningKey(ALICE, "user_signing", newEd25519()) };
    const { snapshot } = validate(body);
    expect(JSON.stringify(snapshot)).not.toContain("user_signing");
  });

  it("skips a device without keys (Synapse lists those) without counting it", () => {
    const u = makeUser(ALICE);
    const body = {
      ...devicesAnswer(u),
      devices: [...u.devices, { device_id: "NOKEYS" }, { device_id: "NULLKEYS", keys: null }],
    };
    const { snapshot, dropped } = validate(body);
    expect(Object.keys(snapshot.devices)).toEqual(["DEV0"]);
    expect(dropped.devices).toBe(0);
  });

  it("treats a device id of __proto__ as data", () => {
    const d = makeDevice(ALICE, "__proto__");
    const { snapshot } = validate({ user_id: ALICE, stream_id: 1, devices: [d.entry] });
    expect(Object.getPrototypeOf(snapshot.devices)).toBe(Object.prototype);
    expect(Object.hasOwn(snapshot.devices, "__proto__")).toBe(true);
  });
});

describe("display names", () => {
  it("moves device_display_name into unsigned and drops the remote's other unsigned fields", () => {
    const u = makeUser(ALICE, { devices: ["A", "B", "C"], displayNames: { A: "Alice's phone ☎" } });
    (u.devices[0]!.keys as Json).unsigned = { device_display_name: "ignored", secret: "x" };
    (u.devices[1]!.keys as Json).unsigned = { device_display_name: "from keys.unsigned" };
    (u.devices[2]!.keys as Json).unsigned = { other: 1 };
    const { snapshot, dropped } = validate(devicesAnswer(u));
    expect(dropped.devices).toBe(0);
    expect(snapshot.devices.A!.unsigned).toEqual({ device_display_name: "Alice's phone ☎" });
    expect(snapshot.devices.B!.unsigned).toEqual({ device_display_name: "from keys.unsigned" });
    expect("unsigned" in snapshot.devices.C!).toBe(false);
    expect(snapshot.devices.A!.signatures).toEqual((u.devices[0]!.keys as Json).signatures);
  });

  it("ignores a display name that is not a string", () => {
    const u = makeUser(ALICE);
    (u.devices[0] as Json).device_display_name = 7;
    const { snapshot, dropped } = validate(devicesAnswer(u));
    expect(dropped.devices).toBe(0);
    expect("unsigned" in snapshot.devices.DEV0!).toBe(false);
  });
});

describe("answers rejected as a whole", () => {
  it("about another user", () => {
    const u = makeUser("@bob:remote.test");
    expect(invalid(devicesAnswer(u)).message).toContain("@bob:remote.test");
  });

  it("with the wrong shape", () => {
    const good = devicesAnswer(makeUser(ALICE));
    invalid(null);
    invalid([]);
    invalid({ ...good, stream_id: 1.5 });
    invalid({ ...good, stream_id: "1" });
    invalid({ ...good, devices: {} });
    invalid({ stream_id: 1, devices: [] });
  });

  it(`with more than ${MAX_DEVICES} devices, and not with exactly ${MAX_DEVICES}`, () => {
    const many = (n: number) => ({
      user_id: ALICE,
      stream_id: 1,
      devices: Array.from({ length: n }, (_, i) => ({ device_id: `D${i}` })),
    });
    expect(validate(many(MAX_DEVICES)).dropped.devices).toBe(0);
    expect(invalid(many(MAX_DEVICES + 1)).message).toContain("1001");
  });
});

describe("devices dropped and counted", () => {
  function dropOne(tamper: (u: ReturnType<typeof makeUser>) => void): {
    kept: string[];
    reasons: string[];
    ids: (string | undefined)[];
    invalid: string[] | undefined;
  } {
    const u = makeUser(ALICE, { devices: ["GOOD", "BAD"] });
    tamper(u);
    const { snapshot, dropped } = validate(devicesAnswer(u));
    expect(dropped.devices).toBe(1);
    expect(dropped.masterKey || dropped.selfSigningKey).toBe(false);
    expect(dropped.parts.every((p) => p.part === "device")).toBe(true);
    return {
      kept: Object.keys(snapshot.devices),
      reasons: dropped.parts.map((p) => p.reason),
      ids: dropped.parts.map((p) => p.deviceId),
      invalid: snapshot.invalidDevices,
    };
  }
  const bad = (u: ReturnType<typeof makeUser>) => u.devices[1]!.keys as Json;

  it("whose keys.device_id differs from device_id", () => {
    const r = dropOne((u) => void (u.devices[1]!.device_id = "OTHER"));
    expect(r.kept).toEqual(["GOOD"]);
    expect(r.reasons[0]).toContain("keys.device_id");
    expect(r.ids).toEqual(["OTHER"]);
    expect(r.invalid).toEqual(["OTHER"]);
  });

  it("whose keys.user_id is another user, even when correctly self-signed", () => {
    const r = dropOne((u) => {
      const d = makeDevice("@mallory:remote.test", "BAD");
      u.devices[1] = d.entry;
    });
    expect(r.kept).toEqual(["GOOD"]);
    expect(r.reasons[0]).toContain("user_id");
  });

  it("whose keys were changed after signing", () => {
    const r = dropOne((u) => void ((bad(u).keys as Record<string, string>)["curve25519:BAD"] = newEd25519().pub));
    expect(r.reasons[0]).toContain("self-signature");
    expect(r.ids).toEqual(["BAD"]);
    expect(r.invalid).toEqual(["BAD"]);
  });

  it("signed by a key other than its own", () => {
    const r = dropOne((u) => {
      const { signatures: _s, ...rest } = bad(u);
      u.devices[1]!.keys = signWith(rest, ALICE, "ed25519:BAD", newEd25519());
    });
    expect(r.reasons[0]).toContain("self-signature");
  });

  it("without its ed25519 key, or with keys of the wrong shape", () => {
    expect(dropOne((u) => void delete (bad(u).keys as Record<string, string>)["ed25519:BAD"]).reasons[0]).toContain(
      "no ed25519:BAD",
    );
    expect(dropOne((u) => void (bad(u).algorithms = "m.olm")).reasons[0]).toContain("wrong shape");
    const noId = dropOne((u) => void delete (u.devices[1] as Json).device_id);
    expect(noId.reasons[0]).toContain("device entry has the wrong shape");
    // No id: nothing the overlay could match against the homeserver's list.
    expect(noId.ids).toEqual([undefined]);
    expect(noId.invalid).toBeUndefined();
  });

  // A remote that rebuilds device keys from a fixed set of fields drops extra signed fields
  // such as MSC3814's `"dehydrated": true`, so the self-signature no longer verifies.
  it("whose extra signed field a strict remote left out: named, with the reason, in invalidDevices", () => {
    const r = dropOne((u) => {
      const { signatures: _s, ...rest } = bad(u);
      u.devices[1]!.keys = signWith({ ...rest, dehydrated: true }, ALICE, "ed25519:BAD", u.deviceKeys["BAD"]!);
      delete (u.devices[1]!.keys as Json).dehydrated;
    });
    expect(r.kept).toEqual(["GOOD"]);
    expect(r.ids).toEqual(["BAD"]);
    expect(r.reasons).toEqual(["self-signature does not verify"]);
    expect(r.invalid).toEqual(["BAD"]);
  });

  it("invalidDevices lists only ids that never verified, and is absent when nothing was dropped", () => {
    const u = makeUser(ALICE, { devices: ["A", "B"], crossSigning: false });
    const brokenA = { ...u.devices[0]!, keys: { ...(u.devices[0]!.keys as Json), device_id: "Z" } };
    const brokenB = { ...u.devices[1]!, keys: { ...(u.devices[1]!.keys as Json), device_id: "Z" } };
    // A: broken first, then valid -> kept, not invalid. B: valid first, then broken -> kept.
    const { snapshot, dropped } = validate({
      ...devicesAnswer(u),
      devices: [brokenA, u.devices[0], u.devices[1], brokenB],
    });
    expect(Object.keys(snapshot.devices).sort()).toEqual(["A", "B"]);
    expect(dropped.devices).toBe(2);
    expect("invalidDevices" in snapshot).toBe(false);
    expect("invalidDevices" in validate(devicesAnswer(u)).snapshot).toBe(false);
  });

  it("listed twice", () => {
    const u = makeUser(ALICE, { devices: ["A"] });
    const { snapshot, dropped } = validate({ ...devicesAnswer(u), devices: [u.devices[0], u.devices[0]] });
    expect(Object.keys(snapshot.devices)).toEqual(["A"]);
    expect(dropped.devices).toBe(1);
  });

  it("keeps at most 20 reasons and counts the rest", () => {
    const u = makeUser(ALICE, { devices: 25, crossSigning: false });
    for (const d of u.devices) (d.keys as Json).device_id = "X";
    const { dropped } = validate(devicesAnswer(u));
    expect(dropped.devices).toBe(25);
    expect(dropped.parts).toHaveLength(20);
    expect(dropped.unlisted).toBe(5);
    // Every dropped device is still known to the overlay, listed or not.
    expect(validate(devicesAnswer(u)).snapshot.invalidDevices).toHaveLength(25);
  });
});

describe("logDroppedParts", () => {
  it("writes one info line per described part, then one with the count of the rest; remote text is cut", () => {
    const u = makeUser(ALICE, { devices: 25, crossSigning: false });
    for (const d of u.devices) (d.keys as Json).device_id = "X".repeat(5000);
    const lines: [string, Record<string, unknown>][] = [];
    logDroppedParts(
      { info: (msg, fields = {}) => void lines.push([msg, fields]) },
      ALICE,
      validate(devicesAnswer(u)).dropped,
    );
    expect(lines).toHaveLength(21);
    expect(lines[0]![1]).toMatchObject({ userId: ALICE, part: "device", deviceId: "DEV0" });
    expect(String(lines[0]![1].reason).length).toBeLessThanOrEqual(201);
    expect(lines[20]).toEqual(["dropped more invalid parts of a remote device list", { userId: ALICE, count: 5 }]);
  });
});

describe("cross-signing keys", () => {
  it("drops a self-signing key not signed by the master key, keeping the master key", () => {
    const u = makeUser(ALICE);
    const { signatures: _s, ...unsignedSsk } = u.selfSigningKey!;
    u.selfSigningKey = signWith(unsignedSsk, ALICE, `ed25519:${u.crossSigning!.masterKey.pub}`, newEd25519());
    const { snapshot, dropped } = validate(devicesAnswer(u));
    expect(dropped).toMatchObject({ devices: 0, masterKey: false, selfSigningKey: true });
    expect(dropped.parts).toEqual([{ part: "self_signing_key", reason: "not signed by the master key" }]);
    expect(snapshot.masterKey).toEqual(u.masterKey);
    expect(snapshot.selfSigningKey).toBeUndefined();
  });

  it("drops a self-signing key with no signatures at all", () => {
    const u = makeUser(ALICE);
    delete u.selfSigningKey!.signatures;
    expect(validate(devicesAnswer(u)).dropped.selfSigningKey).toBe(true);
  });

  it("drops a master key with two keys, and with it the self-signing key", () => {
    const u = makeUser(ALICE);
    const extra = newEd25519().pub;
    (u.masterKey!.keys as Record<string, string>)[`ed25519:${extra}`] = extra;
    const { snapshot, dropped } = validate(devicesAnswer(u));
    expect(dropped).toMatchObject({ masterKey: true, selfSigningKey: true });
    expect(dropped.parts).toEqual([
      { part: "master_key", reason: "has 2 keys, not exactly one" },
      { part: "self_signing_key", reason: "no valid master key to check it against" },
    ]);
    expect(snapshot.masterKey).toBeUndefined();
    expect(snapshot.selfSigningKey).toBeUndefined();
    expect(Object.keys(snapshot.devices)).toEqual(["DEV0"]);
  });

  it("drops keys with the wrong usage", () => {
    const u = makeUser(ALICE);
    u.masterKey!.usage = ["self_signing"];
    expect(validate(devicesAnswer(u)).dropped).toMatchObject({ masterKey: true, selfSigningKey: true });
    const v = makeUser(ALICE);
    const { signatures: _s, ...ssk } = v.selfSigningKey!;
    v.selfSigningKey = signWith(
      { ...ssk, usage: ["user_signing"] },
      ALICE,
      `ed25519:${v.crossSigning!.masterKey.pub}`,
      v.crossSigning!.masterKey,
    );
    expect(validate(devicesAnswer(v)).dropped).toMatchObject({ masterKey: false, selfSigningKey: true });
  });

  it("drops a key whose id suffix differs from the key, or of another user", () => {
    const u = makeUser(ALICE);
    u.masterKey!.keys = { "ed25519:other": u.crossSigning!.masterKey.pub };
    expect(validate(devicesAnswer(u)).dropped.masterKey).toBe(true);
    const v = makeUser(ALICE);
    v.masterKey = makeCrossSigningKey("@bob:remote.test", "master", v.crossSigning!.masterKey);
    expect(validate(devicesAnswer(v)).dropped).toMatchObject({ masterKey: true, selfSigningKey: true });
  });

  it("drops a self-signing key without a master key", () => {
    const u = makeUser(ALICE);
    u.masterKey = null;
    const { snapshot, dropped } = validate(devicesAnswer(u));
    expect(dropped).toMatchObject({ masterKey: false, selfSigningKey: true });
    expect(snapshot.selfSigningKey).toBeUndefined();
  });
});

describe("serverNameOf", () => {
  it("takes everything after the first colon, ports and IPv6 literals included", () => {
    expect(serverNameOf("@alice:example.org")).toBe("example.org");
    expect(serverNameOf("@alice:example.org:8448")).toBe("example.org:8448");
    expect(serverNameOf("@alice:[::1]:8448")).toBe("[::1]:8448");
    expect(serverNameOf("@a:1.2.3.4")).toBe("1.2.3.4");
  });

  it("rejects strings that are not user ids", () => {
    for (const bad of ["alice:example.org", "@alice", "@alice:", "@:example.org", "#room:example.org"]) {
      expect(() => serverNameOf(bad)).toThrow(FederationError);
    }
  });
});
