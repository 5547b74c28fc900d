// Past the splice point (the member gone out and the token ours) a /sync splice stops looking:
// the rest of the body goes out as it came, whatever look-alikes it holds (sync-splice.ts
// #afterRead). Before it, with the token ours, only the member's name is searched for: a name cut
// by a read boundary, or spelled with escapes, is still found.
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { injectChanged } from "../../src/delivery/json/sync-inject.ts";
import { type Spliced, SyncSplice } from "../../src/delivery/json/sync-splice.ts";

const wrap = (t: string) => `${t}_ours`;

/** `doc` spliced in reads of the given sizes (cycled), each in a buffer of its own. */
function splice(doc: string, users: readonly string[], sizes: readonly number[]) {
  let result: Spliced | undefined;
  const s = new SyncSplice(users, "sync", (r) => (result = r), wrap);
  const bytes = Buffer.from(doc);
  const parts: Buffer[] = [];
  const out = (b: Uint8Array, from: number, to: number) => parts.push(Buffer.from(b.subarray(from, to)));
  for (let at = 0, n = 0; at < bytes.length; n++) {
    const len = Math.min(sizes[n % sizes.length]!, bytes.length - at);
    s.feed(Buffer.from(bytes.subarray(at, at + len)), 0, len, out);
    at += len;
  }
  s.end(out);
  s.settle();
  return { out: Buffer.concat(parts).toString(), result };
}

describe("SyncSplice past the splice point", () => {
  // Event content after the member: strings and nested keys that look like it, escapes.
  const hostile =
    '"rooms":{"join":{"!r:x":{"timeline":{"events":[{"content":{"body":"\\"device_lists\\":{\\"changed\\":[\\"@evil:x\\"]}",' +
    '"device_lists":{"changed":["@evil:x"]},"device\\u005flists":1}}]}}}}';

  test("the rest goes out byte for byte, look-alikes and a second top-level member included", () => {
    // Past a scan slice (4 KiB) from the splice point: a read scanned ahead stops at the slice's end.
    const rest = `,${hostile},"pad":"${"x".repeat(5000)}","device_lists":{"changed":["@late:x"]},"next_batch":"t2"}`;
    const doc = `{"next_batch":"t1","device_lists":{"changed":["@a:x"]}${rest}`;
    for (const sizes of [[1], [7], [40, 3], [1 << 20]]) {
      const { out, result } = splice(doc, ["@b:x"], sizes);
      // The member and the first token rewritten; after them, nothing is looked at any more.
      expect(out).toBe(`{"next_batch":"t1_ours","device_lists":{"changed":["@a:x","@b:x"]}${rest}`);
      expect(result).toEqual({ added: ["@b:x"], reported: ["@a:x"], token: "t1_ours" });
    }
  });

  test("before it, with only the member's name searched for, the member is found however it is cut or spelled", () => {
    const filler = fc.string({
      unit: fc.constantFrom("a", "é", " ", "{", "}", '"', "\\", "device_lists", "\\u005f", "next_batch"),
      minLength: 300,
      maxLength: 20_000,
    });
    fc.assert(
      fc.property(
        fc.array(filler, { minLength: 1, maxLength: 5 }),
        fc.nat(),
        fc.boolean(),
        fc.array(fc.integer({ min: 256, max: 40_000 }), { minLength: 1, maxLength: 4 }),
        (texts, at, escaped, sizes) => {
          const members = texts.map((t, i) => `"r${i}":${JSON.stringify(i % 2 ? { device_lists: t, x: [t] } : t)}`);
          const key = escaped ? '"device\\u005flists"' : '"device_lists"';
          members.splice(1 + (at % members.length), 0, `${key}:{"changed":["@a:x"]}`);
          const doc = `{"next_batch":"t1",${members.join(",")}}`;
          const { out, result } = splice(doc, ["@b:x"], sizes);
          const want = JSON.parse(doc) as Record<string, unknown>;
          injectChanged(want, ["@b:x"], "sync");
          want.next_batch = "t1_ours";
          expect(JSON.parse(out)).toEqual(want);
          expect(result).toEqual({ added: ["@b:x"], reported: ["@a:x"], token: "t1_ours" });
        },
      ),
      { numRuns: 150 },
    );
  });
});
