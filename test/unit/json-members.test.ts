import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { memberValue, topLevelMembers, withMember } from "../../src/delivery/json-members.ts";
import { reportedInRaw, spliceChanged } from "../../src/delivery/sync-splice.ts";
import { bigSyncBody } from "../helpers/bodies.ts";

const buf = (s: string) => Buffer.from(s);
const json = fc.jsonValue({ maxDepth: 4 });
const object = fc.dictionary(fc.string(), json, { maxKeys: 8 });

describe("topLevelMembers", () => {
  test("every member's bytes parse to what JSON.parse gives, compact or indented", () => {
    fc.assert(
      fc.property(object, fc.constantFrom(undefined, 2, "\t"), (obj, indent) => {
        const raw = buf(JSON.stringify(obj, null, indent));
        const layout = topLevelMembers(raw)!;
        expect(layout).toBeDefined();
        expect([...layout.members.keys()].sort()).toEqual(Object.keys(obj).sort());
        for (const k of Object.keys(obj)) expect(memberValue(raw, layout.members.get(k))).toEqual(JSON.parse(JSON.stringify(obj[k])));
      }),
      { numRuns: 300 },
    );
  });

  test("withMember replaces or inserts a member and leaves the rest as it was", () => {
    fc.assert(
      fc.property(object, fc.string(), json, (obj, key, value) => {
        const raw = buf(JSON.stringify(obj));
        const out = withMember(raw, topLevelMembers(raw)!, key, value);
        expect(JSON.parse(out.toString())).toEqual(JSON.parse(JSON.stringify({ ...obj, [key]: value })));
      }),
      { numRuns: 300 },
    );
  });

  test("strings with escaped quotes, backslashes and braces do not confuse it", () => {
    const raw = buf(String.raw`{"a":"x\"}{[\\","b\"c":{"d":["\\\"",{"e":"}"}]},"n":-1.5e3,"t":true,"z":null}`);
    const layout = topLevelMembers(raw)!;
    expect([...layout.members.keys()]).toEqual(["a", 'b"c', "n", "t", "z"]);
    expect(memberValue(raw, layout.members.get('b"c'))).toEqual({ d: ['\\"', { e: "}" }] });
    expect(memberValue(raw, layout.members.get("n"))).toBe(-1500);
  });

  test.each(["", "[]", "\"x\"", "{", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{\"a\":\"x}", "{\"a\":1} x", "{\"a\":{\"b\":1}"])("malformed %j → undefined, never a throw", (text) => {
    expect(topLevelMembers(buf(text))).toBeUndefined();
  });
});

describe("spliceChanged", () => {
  test("adds users to device_lists.changed, keeps left-skip and de-duplication, and reads the token", () => {
    const raw = buf(JSON.stringify({ next_batch: "s9", rooms: { join: {} }, device_lists: { changed: ["@a:x"], left: ["@gone:x"] } }));
    const s = spliceChanged(raw, ["@a:x", "@b:x", "@gone:x"], "sync")!;
    expect(JSON.parse(s.body.toString())).toEqual({ next_batch: "s9", rooms: { join: {} }, device_lists: { changed: ["@a:x", "@b:x"], left: ["@gone:x"] } });
    expect(s.token).toBe("s9");
    expect(s.reported).toEqual(["@a:x"]);
  });

  test("creates device_lists when absent; sliding sync goes under extensions.e2ee", () => {
    const s = spliceChanged(buf('{"next_batch":"t1"}'), ["@b:x"], "sync")!;
    expect(JSON.parse(s.body.toString())).toEqual({ device_lists: { changed: ["@b:x"] }, next_batch: "t1" });
    const slide = spliceChanged(buf('{"pos":"p2","extensions":{"to_device":{"next_batch":"1"}}}'), ["@b:x"], "sliding")!;
    expect(JSON.parse(slide.body.toString())).toEqual({ pos: "p2", extensions: { to_device: { next_batch: "1" }, e2ee: { device_lists: { changed: ["@b:x"] } } } });
    expect(slide.token).toBe("p2");
  });

  test("nothing to add leaves the very same bytes; not an object → undefined", () => {
    const raw = buf('{ "next_batch" : "s1", "device_lists": {"changed": ["@a:x"]} }');
    expect(spliceChanged(raw, ["@a:x"], "sync")!.body).toBe(raw);
    expect(spliceChanged(buf("not json"), ["@a:x"], "sync")).toBeUndefined();
  });

  test("a realistic 5 MB body gets the same result as a full parse", () => {
    const body = bigSyncBody(5_000_000, { nextBatch: "big", changed: ["@x:y"], left: ["@l:y"] });
    const raw = buf(JSON.stringify(body));
    const s = spliceChanged(raw, ["@new:z", "@l:y"], "sync")!;
    const expected = structuredClone(body) as { device_lists: { changed: string[] } };
    expected.device_lists.changed.push("@new:z");
    expect(JSON.parse(s.body.toString())).toEqual(expected);
    expect(reportedInRaw(raw, "sync")).toEqual(["@x:y"]);
  });
});
