// Views as the /keys/query reading thread sends them back (src/delivery/view-wire.ts): they read
// as the views themselves, equal content has equal digests whatever the answer's order, and
// comparing or re-stamping them does not decode their devices.
import { describe, expect, test } from "vitest";
import { summarize } from "../../src/delivery/keys-answer.ts";
import { sameView } from "../../src/delivery/hs-view.ts";
import { deviceCount, fromWire, seenAgain, toWire, type WireSummary } from "../../src/delivery/view-wire.ts";
import type { HsView } from "../../src/matrix/device.ts";
import { keysQueryAnswer } from "../helpers/bodies.ts";

const bob = "@bob:remote.test";
const summaryOf = (answer: Record<string, unknown>) => summarize(answer, { [bob]: [] }, [bob], 5);
const viewOf = (answer: Record<string, unknown>) => fromWire(toWire(summaryOf(answer))).views[0]!;

/** A view whose devices cannot be decoded: reading them would throw. */
function undecodable(digest: string): HsView {
  const w: WireSummary = {
    views: [{ userId: bob, seenAt: 1, devices: "not json", count: 3, digest }],
    halfCrossSigning: [],
    failedServers: [],
    answered: [],
  };
  return fromWire(w).views[0]!;
}

describe("views from the reading thread", () => {
  test("read as the views summarize gives", () => {
    const answer = keysQueryAnswer([bob], 20);
    const plain = summaryOf(answer);
    const wired = fromWire(structuredClone(toWire(plain)));
    expect(wired).toEqual(plain);
    expect(deviceCount(wired.views[0]!)).toBe(20);
  });

  test("equal content compares equal by digest, in any device order; other keys do not", () => {
    const answer = keysQueryAnswer([bob], 5);
    const devs = (answer.device_keys as Record<string, Record<string, unknown>>)[bob]!;
    const reversed = { ...answer, device_keys: { [bob]: Object.fromEntries(Object.entries(devs).reverse()) } };
    expect(sameView(viewOf(answer), viewOf(reversed))).toBe(true);
    expect(sameView(viewOf(answer), viewOf(keysQueryAnswer([bob], 5, { generation: 1 })))).toBe(false);
    // A view read here (no digest) against one from the thread: compared by content.
    expect(sameView(summaryOf(answer).views[0]!, viewOf(reversed))).toBe(true);
  });

  test("comparing two, counting and re-stamping one leave the devices undecoded", () => {
    const a = undecodable("d1");
    expect(sameView(a, undecodable("d1"))).toBe(true);
    expect(sameView(a, undecodable("d2"))).toBe(false);
    expect(deviceCount(a)).toBe(3);
    const later = seenAgain(a, 99);
    expect([later.seenAt, a.seenAt]).toEqual([99, 1]);
    expect(sameView(later, a)).toBe(true);
    expect(() => later.devices).toThrow();
  });
});
