// The homeserver's view (src/delivery/hs-view.ts): learned only from complete answers, compact,
// and compared with fresh lists the way the overlay compares them.
import { describe, expect, test } from "vitest";
import {
  describeDiff,
  diffView,
  isEmptyDiff,
  knowsCurveKey,
  sameView,
  viewsFromAnswer,
} from "../../src/delivery/hs-view.ts";
import { keysQueryAnswer, snapshotFor } from "../helpers/bodies.ts";

const bob = "@bob:remote.test";

describe("learning a view", () => {
  test("from a request for all devices only, keeping keys and cross-signing public keys, not names or signatures", () => {
    const answer = keysQueryAnswer([bob, "@carol:remote.test"], 2);
    const views = viewsFromAnswer(answer, { [bob]: [], "@carol:remote.test": ["X"] }, [bob, "@carol:remote.test"], 5);
    expect(views.map((v) => v.userId)).toEqual([bob]);
    const v = views[0]!;
    expect(Object.keys(v.devices)).toHaveLength(2);
    const [id, keys] = Object.entries(v.devices)[0]!;
    expect(Object.keys(keys).sort()).toEqual([`curve25519:${id}`, `ed25519:${id}`]);
    expect(JSON.stringify(v)).not.toContain("signatures");
    expect(v.master).toBeDefined();
    expect(v.selfSigning).toBeDefined();
  });

  test("a user missing from device_keys, or a malformed answer, teaches nothing and never throws", () => {
    expect(viewsFromAnswer({ failures: { "remote.test": {} } }, { [bob]: [] }, [bob], 0)).toEqual([]);
    for (const bad of [{ device_keys: [] }, { device_keys: { [bob]: "x" } }, { device_keys: null }, {}]) {
      expect(viewsFromAnswer(bad as Record<string, unknown>, { [bob]: [] }, [bob], 0)).toEqual([]);
    }
    const weird = viewsFromAnswer(
      {
        device_keys: {
          [bob]: {
            A: null,
            B: { keys: { "curve25519:B": 7, ["x".repeat(300)]: "k" } },
            ["D".repeat(300)]: { keys: {} },
          },
        },
      },
      { [bob]: [] },
      [bob],
      0,
    );
    expect(weird[0]!.devices).toEqual({ B: {} });
  });

  test("more than 1000 devices is not recorded", () => {
    expect(viewsFromAnswer(keysQueryAnswer([bob], 1001, { crossSigning: false }), { [bob]: [] }, [bob], 0)).toEqual([]);
  });
});

describe("comparing a fresh list with a view", () => {
  const view = viewsFromAnswer(keysQueryAnswer([bob], 2), { [bob]: [] }, [bob], 0)[0]!;
  const ids = Object.keys(view.devices);

  test("the same devices and keys: no change, whatever the names", () => {
    const same = snapshotFor(bob, ids);
    expect(isEmptyDiff(diffView(view, same))).toBe(true);
  });

  test("added, removed and re-keyed devices, a new master key, each described", () => {
    const grown = snapshotFor(bob, [...ids, "NEWDEV"]);
    expect(describeDiff(diffView(view, grown))).toBe("+1 device NEWDEV");
    const shrunk = snapshotFor(bob, [ids[0]!]);
    expect(describeDiff(diffView(view, shrunk))).toBe(`-1 device ${ids[1]}`);
    const rekeyed = snapshotFor(bob, ids, { generation: 1 });
    const d = diffView(view, rekeyed);
    expect(d.rekeyed.sort()).toEqual([...ids].sort());
    expect(d.masterChanged).toBe(true);
    expect(describeDiff(d)).toContain("new master key");
  });

  test("a device that failed validation is not 'removed', and a missing cross-signing key is not a change", () => {
    const s = snapshotFor(bob, [ids[0]!]);
    s.invalidDevices = [ids[1]!];
    delete s.masterKey;
    delete s.selfSigningKey;
    expect(isEmptyDiff(diffView(view, s))).toBe(true);
  });

  test("curve25519 keys are looked up by identity key, not by other keys", () => {
    const [id, keys] = Object.entries(view.devices)[0]!;
    expect(knowsCurveKey(view, keys[`curve25519:${id}`]!)).toBe(true);
    expect(knowsCurveKey(view, keys[`ed25519:${id}`]!)).toBe(false);
    expect(sameView(view, { ...view, master: "other" })).toBe(false);
  });
});
