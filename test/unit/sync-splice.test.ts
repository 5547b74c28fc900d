import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { ReportedWatch } from "../../src/delivery/json/reported-watch.ts";
import { type Spliced, SyncSplice } from "../../src/delivery/json/sync-splice.ts";
import { injectChanged, type SyncFlavour } from "../../src/delivery/json/sync-inject.ts";
import { bigSyncBody } from "../helpers/bodies.ts";
import { chunking, DL, entries, serialise } from "../helpers/json-text.ts";

const buf = (s: string) => Buffer.from(s);

/**
 * Splice `doc` fed in chunks of the given sizes (cycled), each in a buffer of its own at an
 * offset (the splice may keep them until settle(), as socket reads are never reused).
 */
function splice(
  doc: Uint8Array,
  users: readonly string[],
  sizes: readonly number[] = [doc.length || 1],
  flavour: SyncFlavour = "sync",
  wrap?: (t: string) => string,
) {
  let result: Spliced | undefined;
  const s = new SyncSplice(users, flavour, (r) => (result = r), wrap);
  const parts: Buffer[] = [];
  for (let at = 0, n = 0; at < doc.length; n++) {
    const len = Math.min(sizes[n % sizes.length]!, doc.length - at);
    const scratch = Buffer.alloc(len + 7, '\\"{'.charCodeAt(n % 3));
    scratch.set(doc.subarray(at, at + len), 3);
    s.feed(scratch, 3, 3 + len, (b, from, to) => {
      expect(to).toBeGreaterThan(from); // no empty pieces
      parts.push(Buffer.from(b.subarray(from, to)));
    });
    at += len;
  }
  s.end((b, from, to) => parts.push(Buffer.from(b.subarray(from, to))));
  s.settle();
  return { out: Buffer.concat(parts), result };
}

/** What a full parse gives: the reference the streamed splice must match. */
function reference(doc: string, users: readonly string[], flavour: SyncFlavour = "sync") {
  const body = JSON.parse(doc) as Record<string, unknown>;
  const added = injectChanged(body, users, flavour);
  return { body, added };
}

const users = fc.array(fc.constantFrom("@a:x", "@b:x", "@gone:x", "@é:x"), { maxLength: 4 });
const lists = fc.record(
  {
    changed: fc.array(fc.constantFrom("@a:x", "@c:x"), { maxLength: 2 }),
    left: fc.array(fc.constantFrom("@gone:x"), { maxLength: 1 }),
  },
  { requiredKeys: [] },
);

describe("SyncSplice agrees with parsing the whole body", () => {
  test("any object, any chunking, with device_lists anywhere or absent, escapes and whitespace on every boundary", () => {
    fc.assert(
      fc.property(
        entries,
        fc.option(lists),
        fc.nat(),
        users,
        chunking,
        fc.nat(1000),
        (es, dl, at, who, sizes, seed) => {
          const all: [string, unknown][] = es.filter(([k]) => k !== DL && k !== "next_batch");
          if (dl) all.splice(at % (all.length + 1), 0, [DL, dl]);
          all.push(["next_batch", "s1"]);
          const doc = serialise(all, seed);
          const { out, result } = splice(buf(doc), who, sizes);
          const want = reference(doc, who);
          const had: string[] = dl?.changed ?? [];
          expect(JSON.parse(out.toString())).toEqual(want.body);
          expect(result).toEqual({ added: want.added, reported: had, token: "s1" });
          // Nothing to add: the very bytes the homeserver sent.
          if (want.added.every((u) => had.includes(u))) expect(out.toString()).toBe(doc);
        },
      ),
      { numRuns: 400 },
    );
  });

  test("large bodies in reads of any size, the member anywhere: reads sent before their scan and after agree", () => {
    const filler = fc.string({
      unit: fc.constantFrom("a", "é", " ", "{", "}", '"', "\\", "device_lists", "\\u005f"),
      minLength: 1000,
      maxLength: 20_000,
    });
    fc.assert(
      fc.property(
        fc.array(filler, { minLength: 1, maxLength: 6 }),
        fc.option(lists),
        fc.nat(),
        users,
        fc.array(fc.integer({ min: 300, max: 70_000 }), { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        (texts, dl, at, who, sizes, pretty) => {
          const all: [string, unknown][] = texts.map((t, i) => [`r${i}`, i % 2 ? { [DL]: t, x: [t] } : t]);
          if (dl) all.splice(at % (all.length + 1), 0, [DL, dl]);
          all.push(["next_batch", "s1"]);
          const doc = JSON.stringify(Object.fromEntries(all), null, pretty ? 1 : undefined) + (pretty ? "\n" : "");
          const { out, result } = splice(buf(doc), who, sizes);
          const want = reference(doc, who);
          expect(JSON.parse(out.toString())).toEqual(want.body);
          expect(result).toEqual({ added: want.added, reported: dl?.changed ?? [], token: "s1" });
        },
      ),
      { numRuns: 150 },
    );
  });

  test("with a wrap, the token is rewritten wherever it sits, however the body is cut, and the rewritten one is booked", () => {
    const wrap = (t: string) => `${t}.ours`;
    fc.assert(
      fc.property(
        entries,
        fc.option(lists),
        fc.nat(),
        fc.nat(),
        users,
        chunking,
        fc.nat(1000),
        fc.constantFrom<SyncFlavour>("sync", "sliding"),
        (es, dl, at, tokenAt, who, sizes, seed, flavour) => {
          const member = flavour === "sync" ? DL : "extensions";
          const token = flavour === "sync" ? "next_batch" : "pos";
          const all: [string, unknown][] = es.filter(
            ([k]) => k !== DL && k !== "next_batch" && k !== "extensions" && k !== "pos",
          );
          if (dl)
            all.splice(at % (all.length + 1), 0, [member, flavour === "sync" ? dl : { e2ee: { device_lists: dl } }]);
          all.splice(tokenAt % (all.length + 1), 0, [token, 's"1']);
          const doc = serialise(all, seed);
          const { out, result } = splice(buf(doc), who, sizes, flavour, wrap);
          const want = reference(doc, who, flavour);
          want.body[token] = 's"1.ours';
          expect(JSON.parse(out.toString())).toEqual(want.body);
          expect(result?.token).toBe('s"1.ours');
        },
      ),
      { numRuns: 400 },
    );
  });

  test("the bytes outside device_lists go out exactly as they came", () => {
    const doc =
      '{ "next_batch" : "s9",\n "rooms": {"join": {"device_lists": 1}},"device_lists" : {"changed": ["@a:x"], "left": []} , "z": [ ] }';
    for (const size of [1, 2, 7, 64, doc.length]) {
      const { out } = splice(buf(doc), ["@b:x"], [size]);
      expect(out.toString()).toBe(
        '{ "next_batch" : "s9",\n "rooms": {"join": {"device_lists": 1}},"device_lists" : {"changed":["@a:x","@b:x"],"left":[]} , "z": [ ] }',
      );
    }
  });

  test("device_lists absent: added as the last member; an empty object gets it alone", () => {
    expect(splice(buf('{"next_batch":"t1" }\n'), ["@b:x"], [1]).out.toString()).toBe(
      '{"next_batch":"t1" ,"device_lists":{"changed":["@b:x"]}}\n',
    );
    expect(splice(buf("{ }"), ["@b:x"]).out.toString()).toBe('{ "device_lists":{"changed":["@b:x"]}}');
  });

  test("left-skip, de-duplication, a malformed device_lists replaced, an escaped key recognised", () => {
    const doc = JSON.stringify({ next_batch: "s9", device_lists: { changed: ["@a:x"], left: ["@gone:x"] } });
    const { out, result } = splice(buf(doc), ["@a:x", "@b:x", "@b:x", "@gone:x"], [5]);
    expect(JSON.parse(out.toString())).toEqual({
      next_batch: "s9",
      device_lists: { changed: ["@a:x", "@b:x"], left: ["@gone:x"] },
    });
    expect(result).toEqual({ added: ["@a:x", "@b:x"], reported: ["@a:x"], token: "s9" });
    expect(JSON.parse(splice(buf('{"device_lists":null,"next_batch":"s"}'), ["@b:x"]).out.toString())).toEqual({
      device_lists: { changed: ["@b:x"] },
      next_batch: "s",
    });
    expect(
      JSON.parse(splice(buf('{"device\\u005flists":{"changed":["@a:x"]}}'), ["@b:x"], [3]).out.toString()),
    ).toEqual({ device_lists: { changed: ["@a:x", "@b:x"] } });
  });

  test("a duplicated device_lists: every occurrence gets the users, so the one clients keep has them", () => {
    const { out, result } = splice(
      buf('{"device_lists":{"changed":["@a:x"]},"device_lists":{"changed":["@c:x"]}}'),
      ["@b:x"],
      [4],
    );
    expect(JSON.parse(out.toString())).toEqual({ device_lists: { changed: ["@c:x", "@b:x"] } });
    expect(result?.reported).toEqual(["@c:x"]);
  });

  test("sliding sync: under extensions.e2ee, created when absent, the token is pos", () => {
    const { out, result } = splice(
      buf('{"pos":"p2","extensions":{"to_device":{"next_batch":"1"}},"rooms":{}}'),
      ["@b:x"],
      [3],
      "sliding",
    );
    expect(JSON.parse(out.toString())).toEqual({
      pos: "p2",
      rooms: {},
      extensions: { to_device: { next_batch: "1" }, e2ee: { device_lists: { changed: ["@b:x"] } } },
    });
    expect(result?.token).toBe("p2");
    const bare = splice(buf('{"pos":"p3"}'), ["@b:x"], [1], "sliding");
    expect(JSON.parse(bare.out.toString())).toEqual({
      pos: "p3",
      extensions: { e2ee: { device_lists: { changed: ["@b:x"] } } },
    });
  });

  test("a realistic 5 MB body in 64 KiB reads gets what a full parse gives", () => {
    const body = bigSyncBody(5_000_000, { nextBatch: "big", changed: ["@x:y"], left: ["@l:y"] });
    const doc = JSON.stringify(body);
    const { out, result } = splice(buf(doc), ["@new:z", "@l:y"], [65536]);
    expect(JSON.parse(out.toString())).toEqual(reference(doc, ["@new:z", "@l:y"]).body);
    expect(result).toEqual({ added: ["@new:z"], reported: ["@x:y"], token: "big" });
    expect(out.length).toBe(Buffer.byteLength(doc) + ',"@new:z"'.length);
  });

  test("one large read with the token first and the member far on: the rest of the read is still read for it", () => {
    for (const lists of ['"device_lists":{"changed":["@x:y"]}', '"device\\u005flists":{"changed":["@x:y"]}']) {
      const filler = `"rooms":{"join":{"!r:x":{"timeline":{"events":[${'{"body":"x"},'.repeat(2000)}{}]}}}}`;
      const doc = `{"next_batch":"t1",${filler},${lists},"after":"${"y".repeat(9000)}"}`;
      for (const sizes of [[1 << 20], [20_000]]) {
        const { out, result } = splice(buf(doc), ["@new:z"], sizes, "sync", (t) => `${t}_ours`);
        const want = reference(doc, ["@new:z"]).body;
        want.next_batch = "t1_ours";
        expect(JSON.parse(out.toString())).toEqual(want);
        expect(result).toEqual({ added: ["@new:z"], reported: ["@x:y"], token: "t1_ours" });
      }
    }
  });
});

describe("a body that is not one JSON object goes out unchanged and books nothing", () => {
  // Each fails before a point where the splice would add anything.
  const cases = [
    "",
    "[]",
    '"x"',
    "not json",
    '{"a"}',
    '{"a":}',
    '{"a":1,}',
    "{,",
    '{"device_lists":{"changed":["@a:x"]',
    '{"device_lists":{"changed":["@a:x"]]}',
    '{"device_lists":{"changed":["@a:x"],"next_batch":"s1"',
    '{"next_batch":"s1"} {}',
    '{"a":1}}',
  ];
  test.each(cases)("%j", (doc) => {
    for (const size of [1, 3, 1 << 20]) {
      const { out, result } = splice(buf(doc), ["@b:x"], [size]);
      expect(out.toString()).toBe(doc);
      expect(result).toBeUndefined();
    }
  });

  // The splice cannot take back what it sent; the client's JSON.parse fails on these anyway.
  test("found bad after device_lists went out: the rest goes out as it came, nothing is booked", () => {
    for (const size of [1, 4, 1 << 20]) {
      const { out, result } = splice(buf('{"device_lists":{"changed":[]},"rooms":{"join":'), ["@b:x"], [size]);
      expect(out.toString()).toBe('{"device_lists":{"changed":["@b:x"]},"rooms":{"join":');
      expect(result).toBeUndefined();
    }
  });

  test("a large body found bad only after its closing brace went out: the member was added, and booked if its token came first", () => {
    // Over 64 KiB of it was sent unscanned, so the brace goes out before the scan ends.
    const doc = `{"next_batch":"s1","rooms":"${"x".repeat(100_000)}",}`;
    const { out, result } = splice(buf(doc), ["@b:x"], [65536]);
    expect(out.toString()).toBe(`${doc.slice(0, -1)},"device_lists":{"changed":["@b:x"]}}`);
    // The scan behind stops at the token. Harmless here: the client cannot parse this body,
    // asks again from its old position, and the delivery is carried again.
    expect(result?.token).toBe("s1");
    expect(
      splice(buf(`{"rooms":"${"x".repeat(100_000)}",,"next_batch":"s1"}`), ["@b:x"], [65536]).result,
    ).toBeUndefined();
    // Small enough to scan before the brace goes out: unchanged, and not booked.
    const small = `{"next_batch":"s1","a":"${"x".repeat(1000)}",}`;
    const s = splice(buf(small), ["@b:x"], [100]);
    expect(s.out.toString()).toBe(small);
    expect(s.result).toBeUndefined();
  });
});

/** `doc` cut into chunks of the given sizes (cycled), each in a buffer of its own. */
function chunksOf(doc: Buffer, sizes: readonly number[]): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0, n = 0; at < doc.length; n++) {
    const len = Math.min(sizes[n % sizes.length]!, doc.length - at);
    out.push(Buffer.from(doc.subarray(at, at + len)));
    at += len;
  }
  return out;
}

describe("ReportedWatch", () => {
  async function watch(doc: string, sizes: readonly number[]): Promise<string[] | undefined> {
    let got: string[] | undefined;
    const w = new ReportedWatch((users) => (got = users));
    for (const c of chunksOf(buf(doc), sizes)) w.data(c, 0, c.length);
    w.end();
    await new Promise((r) => setImmediate(r));
    return got;
  }

  test("reports the homeserver's own changed, however the body is cut; nothing when it names none", async () => {
    const big = `"rooms":{"join":{"!r:x":{"timeline":{"events":[{"content":{"body":"${"x".repeat(50_000)}","device_lists":{"changed":["@nested:x"]}}}]}}}}`;
    for (const sizes of [[1], [7], [4096], [1 << 20]]) {
      expect(await watch(`{"next_batch":"s",${big},"device_lists":{"changed":["@a:x"],"left":[]}}`, sizes)).toEqual([
        "@a:x",
      ]);
      expect(await watch(`{"device\\u005flists":{"changed":["@e:x"]},${big}}`, sizes)).toEqual(["@e:x"]);
      expect(await watch(`{"next_batch":"s",${big}}`, sizes)).toBeUndefined();
      expect(await watch(`{"next_batch":"s","device_lists":{"changed":[]}}`, sizes)).toBeUndefined();
    }
  });
});
