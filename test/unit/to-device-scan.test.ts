// Detection's clues read from the raw bytes of a to_device value (src/delivery/to-device-scan.ts)
// are exactly those of cluesOf(JSON.parse(raw)): duplicate keys, escaped keys and strings,
// whitespace, look-alike keys nested deeper, any value where an object or a string is expected.
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { cluesIn } from "../../src/delivery/to-device-scan.ts";
import { cluesOf, OLM } from "../../src/delivery/to-device-clues.ts";
import { Members, serialise, value } from "../helpers/json-text.ts";

const KEY = Buffer.alloc(32, 1).toString("base64").replace(/=+$/, "");
const TYPES = [
  "m.room.encrypted",
  "m.room_key_request",
  "m.secret.request",
  "m.key.verification.request",
  "m.key.verification.ready",
  "m.key.verification.start",
  "m.key.verification.mac",
  "m.dummy",
  "__proto__",
];
const str = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom("@b:r.test", "@c:r.test", KEY, OLM, "D1", "request", ...TYPES) },
  { weight: 1, arbitrary: fc.constantFrom("nobody", "has space", "", `${KEY}=`, "request_cancellation", "@é:x") },
  { weight: 1, arbitrary: fc.string({ maxLength: 8 }) },
);
const field = fc.oneof({ weight: 5, arbitrary: str }, { weight: 1, arbitrary: value });
const contentKey = fc.constantFrom(
  "algorithm",
  "sender_key",
  "requesting_device_id",
  "from_device",
  "action",
  "ciphertext",
  "sender",
  "x",
);
/** Each checked type's content, as a client sends it. */
const CONTENT: Record<string, [string, unknown][]> = {
  "m.room.encrypted": [
    ["algorithm", OLM],
    ["sender_key", KEY],
    ["ciphertext", { [KEY]: { type: 0, body: "SECRET" } }],
  ],
  "m.room_key_request": [
    ["action", "request"],
    ["requesting_device_id", "D1"],
  ],
  "m.secret.request": [
    ["action", "request"],
    ["requesting_device_id", "D2"],
  ],
  "m.key.verification.request": [["from_device", "D3"]],
  "m.key.verification.start": [["from_device", "D4"]],
};
// Extra members before (they lose to the real ones) and after (they win), usually none.
const extras = <T>(key: fc.Arbitrary<string>, v: fc.Arbitrary<T>) =>
  fc.oneof(
    { weight: 3, arbitrary: fc.constant([]) },
    { weight: 1, arbitrary: fc.array(fc.tuple(key, v), { maxLength: 3 }) },
  );
const contentOf = (type: string) =>
  fc.tuple(extras(contentKey, field), extras(contentKey, field), fc.boolean()).map(([pre, post, deeper]) => {
    const c = new Members([...pre, ...(Object.hasOwn(CONTENT, type) ? CONTENT[type]! : []), ...post]);
    // Where an attacker writes: the same names, one level deeper, are not the event's.
    return deeper
      ? new Members([
          [
            "x",
            new Members([
              ["sender", "@c:r.test"],
              ["type", type],
              ["content", c],
            ]),
          ],
          ...c.entries,
        ])
      : c;
  });
const eventKey = fc.constantFrom("sender", "type", "content", "unsigned", "x");
const event = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .tuple(
        fc.constantFrom(...TYPES),
        fc.oneof({ weight: 4, arbitrary: fc.constant("@b:r.test") }, { weight: 1, arbitrary: str }),
      )
      .chain(([type, sender]) =>
        fc
          .tuple(contentOf(type), extras(eventKey, fc.oneof(field, contentOf(type))), extras(eventKey, field))
          .map(([c, pre, post]) => new Members([...pre, ["sender", sender], ["type", type], ["content", c], ...post])),
      ),
  },
  { weight: 1, arbitrary: value },
);
const toDevice = fc.array(
  fc.tuple(
    fc.constantFrom("events", "events", "next_batch", "x"),
    fc.oneof({ weight: 4, arbitrary: fc.array(event, { maxLength: 6 }) }, { weight: 1, arbitrary: value }),
  ),
  { maxLength: 3 },
);

describe("clues read from a to_device value's bytes", () => {
  test("the same clues as a full parse gives, for any value written any way", () => {
    fc.assert(
      fc.property(toDevice, fc.nat(), (entries, seed) => {
        const text = serialise(entries, seed);
        const want = cluesOf(JSON.parse(text));
        expect(cluesIn(Buffer.from(text))).toEqual(want);
      }),
      { numRuns: 3000 },
    );
  });

  test("duplicates: the last key wins, at every level", () => {
    const olm = `{"algorithm":"${OLM}","sender_key":"${KEY}"}`;
    const cases = [
      `{"events":[{"sender":"@b:r.test","type":"m.room.encrypted","content":${olm}}],"events":[]}`,
      `{"events":[],"events":[{"sender":"@b:r.test","type":"m.room.encrypted","content":${olm}}]}`,
      `{"events":[{"sender":"@b:r.test","type":"m.room.encrypted","content":${olm},"content":{}}]}`,
      `{"events":[{"sender":"@b:r.test","type":"m.room.encrypted","content":{},"content":${olm}}]}`,
      `{"events":[{"sender":"@b:r.test","sender":5,"type":"m.room.encrypted","content":${olm}}]}`,
      `{"events":[{"sender":"@x:r.test","sender":"@b:r.test","type":"m.dummy","type":"m.room.encrypted","content":${olm}}]}`,
      `{"events":[{"sender":"@b:r.test","type":"m.room.encrypted","content":{"sender_key":"${KEY}","algorithm":"${OLM}","sender_key":1}}]}`,
    ];
    for (const text of cases) expect([text, cluesIn(Buffer.from(text))]).toEqual([text, cluesOf(JSON.parse(text))]);
  });

  test("escaped keys and strings decode as JSON.parse decodes them; a bad escape read gives nothing", () => {
    const text = `{"ev\\u0065nts":[{"s\\u0065nder":"@b\\u003ar.test","type":"m.room\\u002eencrypted","content":{"algorithm":"${OLM}","sender_key":"${KEY.slice(0, 3)}\\u0041${KEY.slice(4)}"}}]}`;
    const want = cluesOf(JSON.parse(text));
    expect(want).toHaveLength(1);
    expect(cluesIn(Buffer.from(text))).toEqual(want);
    expect(cluesIn(Buffer.from(`{"events":[{"sender":"@b\\x:r.test","type":"m.dummy","content":{}}]}`))).toEqual([]);
  });

  test("at most 1000 events are looked at; anything but an object with an events array gives none", () => {
    const ev = `{"sender":"@b:r.test","type":"m.room.encrypted","content":{"algorithm":"${OLM}","sender_key":"${KEY}"}}`;
    expect(cluesIn(Buffer.from(`{"events":[${Array(1500).fill(ev).join(",")}]}`))).toHaveLength(1000);
    for (const text of ["[]", '"x"', "1", "null", "{}", '{"events":{}}', '{"events":"x"}', "  { } "])
      expect(cluesIn(Buffer.from(text))).toEqual([]);
  });

  test("contents are not kept", () => {
    const text = `{"events":[{"sender":"@b:r.test","type":"m.room.encrypted","content":{"algorithm":"${OLM}","sender_key":"${KEY}","ciphertext":{"X":{"body":"SECRET-CONTENT"}}}}]}`;
    const clues = cluesIn(Buffer.from(text));
    expect(clues).toHaveLength(1);
    expect(JSON.stringify(clues)).not.toContain("SECRET-CONTENT");
  });
});
