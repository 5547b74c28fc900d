// The /keys/query overlay by bytes (src/delivery/keys-splice.ts) against the whole-parse overlay
// it replaces (overlayWhole: parse, keys-overlay.ts, re-serialise), on generated answers: the
// same meaning, the same users overlaid and caught up, and valid JSON.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { summarize } from "../../src/delivery/keys-answer.ts";
import { overlayAnswer, overlayWhole, spliceAnswer } from "../../src/delivery/keys-splice.ts";
import type { DeviceSnapshot } from "../../src/matrix/device.ts";
import { crossSigningKeys, deviceIdsOf, deviceKeys, keysQueryAnswer, snapshotFor } from "../helpers/bodies.ts";
import { serialise } from "../helpers/json-text.ts";

type Json = Record<string, unknown>;
const ALICE = "@alice:remote.test";
const BOB = "@bob:remote.test";
const CAROL = "@carol:other.test";
const ME = "@me:example.org";
const USERS = [ALICE, BOB, CAROL, ME, '@q"uo\\te:other.test'];
const devs = (u: string) => deviceIdsOf(u, 4);

const pick = <T>(xs: readonly T[]) => fc.subarray([...xs]);
// A device entry as a homeserver shows it: a generation, a display name or none, maybe a
// signature by someone else (kept by the overlay when the keys are unchanged), or junk.
const device = (u: string, d: string) =>
  fc
    .oneof(
      {
        weight: 6,
        arbitrary: fc.record({ g: fc.nat(1), name: fc.option(fc.string(), { nil: undefined }), other: fc.boolean() }),
      },
      { weight: 1, arbitrary: fc.constantFrom<unknown>(null, "x", 3, []) },
    )
    .map((v) => {
      if (v === null || typeof v !== "object" || Array.isArray(v)) return v;
      const o = v as { g: number; name?: string; other: boolean };
      const dev = deviceKeys(u, d, o.g, o.name);
      if (o.other) (dev.signatures as Json)[ME] = { "ed25519:USK": "sig-by-me" };
      return dev;
    });
const userDevices = (u: string) =>
  fc.oneof(
    {
      weight: 8,
      arbitrary: pick(devs(u)).chain((ids) =>
        fc.tuple(...ids.map((d) => device(u, d))).map((vs) => Object.fromEntries(ids.map((d, i) => [d, vs[i]]))),
      ),
    },
    { weight: 1, arbitrary: fc.constantFrom<unknown>(null, "junk", [1]) },
  );
const crossKey = (u: string, which: "master" | "selfSigning") =>
  fc.record({ g: fc.nat(1), other: fc.boolean() }).map(({ g, other }) => {
    const k = crossSigningKeys(u, g)[which];
    if (other) (k.signatures as Json)[ME] = { "ed25519:USK": "i-verified-this" };
    return k;
  });
// A section: usually an object of some users' entries; sometimes missing or not an object.
const section = (entry: (u: string) => fc.Arbitrary<unknown>) =>
  fc.oneof(
    {
      weight: 10,
      arbitrary: pick(USERS).chain((us) =>
        fc.tuple(...us.map(entry)).map((vs) => us.map((u, i) => [u, vs[i]] as [string, unknown])),
      ),
    },
    { weight: 1, arbitrary: fc.constantFrom<unknown>(undefined, null, "x", []) },
  );
const answer = fc
  .record({
    device_keys: section(userDevices),
    master_keys: section((u) => crossKey(u, "master")),
    self_signing_keys: section((u) => crossKey(u, "selfSigning")),
    user_signing_keys: fc.constant([[ME, { keys: { "ed25519:USK": "USK" } }]] as [string, unknown][]),
    failures: section(() => fc.constant({})).map((s) =>
      Array.isArray(s) ? s.map(([u]) => [String(u).split(":")[1] ?? "", {}]) : s,
    ),
    extra: fc.option(fc.jsonValue({ maxDepth: 2 }), { nil: undefined }),
  })
  .chain((a) =>
    fc.tuple(fc.constant(a), fc.shuffledSubarray(Object.keys(a), { minLength: Object.keys(a).length }), fc.nat()),
  );
function text([a, order, seed]: [Record<string, unknown>, string[], number]): Buffer {
  const entries: [string, unknown][] = [];
  for (const k of order) {
    const v = a[k];
    if (v === undefined) continue;
    // A section of [user, entry] pairs is an object, written with serialise's escapes and spaces.
    const obj =
      Array.isArray(v) && v.every((e) => Array.isArray(e) && e.length === 2 && typeof e[0] === "string")
        ? Object.fromEntries(v as [string, unknown][])
        : v;
    entries.push([k, obj]);
  }
  return Buffer.from(serialise(entries, seed));
}
const snapshot = (u: string) =>
  fc
    .record({ ids: pick(devs(u)), g: fc.nat(1), cs: fc.boolean(), invalid: pick(devs(u)) })
    .map(({ ids, g, cs, invalid }): DeviceSnapshot => {
      const s = snapshotFor(u, ids, { generation: g, crossSigning: cs });
      const bad = invalid.filter((d) => !ids.includes(d));
      if (bad.length) s.invalidDevices = bad;
      return s;
    });
const query = pick(USERS).chain((us) =>
  fc.tuple(
    fc
      .tuple(...us.map((u) => fc.oneof(fc.constant([] as string[]), pick([...devs(u), "NOSUCH"]))))
      .map((ids) => Object.fromEntries(us.map((u, i) => [u, ids[i]!]))),
    fc
      .tuple(...us.map((u) => fc.option(snapshot(u), { nil: undefined })))
      .map((ss) => new Map(ss.filter((s): s is DeviceSnapshot => !!s).map((s) => [s.userId, s]))),
  ),
);

function same(raw: Buffer, requested: Record<string, string[]>, snaps: Map<string, DeviceSnapshot>) {
  // The snapshots are shared (overlays.ts caches them): neither path may change them.
  const before = JSON.stringify([...snaps.values()]);
  const want = overlayWhole(raw, requested, snaps);
  for (let round = 0; round < 2; round++) {
    // The second round may answer from the cache of overlaid entries.
    const learnFor = Object.keys(requested);
    const got = overlayAnswer(raw, requested, snaps, learnFor);
    // What learning reads of the homeserver's answer, when the overlay hands it over parsed.
    if (got.homeserver)
      expect(summarize(got.homeserver, requested, learnFor, 0)).toEqual(
        summarize(JSON.parse(raw.toString()), requested, learnFor, 0),
      );
    expect(got.overlaid).toEqual(want.overlaid);
    expect(got.caughtUp).toEqual(want.caughtUp);
    if (want.body === raw) expect(got.body.equals(raw)).toBe(true);
    else expect(JSON.parse(got.body.toString())).toEqual(JSON.parse(want.body.toString()));
  }
  expect(JSON.stringify([...snaps.values()])).toBe(before);
}

describe("the /keys/query overlay by bytes means what the whole-parse overlay means", () => {
  it("on generated answers, queries and snapshots", () => {
    fc.assert(
      fc.property(answer, query, (a, [requested, snaps]) => same(text(a), requested, snaps)),
      { numRuns: 600 },
    );
  }, 120_000);

  it("splices (passes the homeserver's own bytes on) for a well-formed answer", () => {
    const a = keysQueryAnswer([ALICE, CAROL], 3);
    const raw = Buffer.from(JSON.stringify(a, null, 2));
    const r = spliceAnswer(
      raw,
      { [ALICE]: [], [CAROL]: [] },
      new Map([[ALICE, snapshotFor(ALICE, 2, { generation: 1 })]]),
    );
    expect(r).toBeDefined();
    // CAROL's entry went out as the homeserver wrote it, indentation and all.
    const carol = JSON.stringify({ [CAROL]: (a.device_keys as Json)[CAROL] }, null, 2).slice(2, -2);
    expect(r!.body.toString()).toContain(carol.replace(/\n/g, "\n  "));
    same(raw, { [ALICE]: [], [CAROL]: [] }, new Map([[ALICE, snapshotFor(ALICE, 2, { generation: 1 })]]));
    // Every user to learn about was parsed: learning gets the homeserver's part without a parse.
    const both = new Map([
      [ALICE, snapshotFor(ALICE, 2, { generation: 1 })],
      [CAROL, snapshotFor(CAROL, 1)],
    ]);
    expect(overlayAnswer(raw, { [ALICE]: [], [CAROL]: [] }, both, [ALICE, CAROL]).homeserver).toBeDefined();
    same(raw, { [ALICE]: [], [CAROL]: [] }, both);
  });

  it("a key repeated where it reads takes the whole parse (the last one counts, as in JSON.parse)", () => {
    const s = new Map([[ALICE, snapshotFor(ALICE, 1, { generation: 1 })]]);
    const dev = JSON.stringify({ [ALICE]: { X: deviceKeys(ALICE, "X", 0, "old name") } });
    for (const raw of [
      `{"device_keys":{},"device_keys":${dev},"master_keys":{},"self_signing_keys":{}}`,
      `{"device_keys":{"${ALICE}":{},"${ALICE}":${JSON.stringify({ [devs(ALICE)[0]!]: deviceKeys(ALICE, devs(ALICE)[0]!, 1, "n") })}},"master_keys":{},"self_signing_keys":{}}`,
      `{"device_keys":{},"master_keys":{"${ALICE}":1,"${ALICE}":${JSON.stringify(crossSigningKeys(ALICE, 1).master)}},"self_signing_keys":{}}`,
    ]) {
      expect(spliceAnswer(Buffer.from(raw), { [ALICE]: [] }, s)).toBeUndefined();
      same(Buffer.from(raw), { [ALICE]: [] }, s);
    }
  });

  it("an answer that is not a JSON object goes out as it came", () => {
    const s = new Map([[ALICE, snapshotFor(ALICE, 1)]]);
    for (const raw of ["", "[]", "nul", '{"device_keys":{}', '{"device_keys":{}} x', '{"device_keys":{"a":}}'])
      expect(overlayAnswer(Buffer.from(raw), { [ALICE]: [] }, s).body.toString()).toBe(raw);
  });

  it("1000 devices, answered again from the cache, and again when the homeserver or the snapshot changes", () => {
    const raw0 = Buffer.from(JSON.stringify(keysQueryAnswer([ALICE, BOB], 1000)));
    const raw1 = Buffer.from(JSON.stringify(keysQueryAnswer([ALICE, BOB], 1000, { generation: 1 })));
    const q = { [ALICE]: [], [BOB]: [] };
    const s1 = new Map([[ALICE, snapshotFor(ALICE, 1000, { generation: 1 })]]);
    const s2 = new Map([[ALICE, snapshotFor(ALICE, 999, { generation: 2 })]]);
    for (const [raw, s] of [
      [raw0, s1],
      [raw0, s1],
      [raw1, s1],
      [raw1, s2],
      [raw0, s2],
      [raw0, s1],
    ] as const) {
      same(raw, q, s);
      expect(spliceAnswer(raw, q, s)).toBeDefined();
    }
    expect(overlayAnswer(raw1, q, s1).caughtUp).toEqual([ALICE]);
  });
});
