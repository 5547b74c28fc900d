import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { BEHIND_BYTES, ReadBehind } from "../../src/delivery/json/read-behind.ts";
import { KeyFinder } from "../../src/delivery/json/key-finder.ts";
import { chunking, DL, serialise, value } from "../helpers/json-text.ts";

/** Detach a read's memory, as the front end frees a read nobody keeps (flow.ts release). */
const free = (b: Uint8Array) => void (b.buffer as ArrayBuffer & { transfer(n: number): ArrayBuffer }).transfer(0);
const TD = "to_device";
/** The test's "worth reading": the value names a user (escapes decoded). */
const named = (raw: Buffer): boolean => {
  try {
    return JSON.stringify(JSON.parse(raw.toString())).includes("@");
  } catch {
    return false;
  }
};

/**
 * `doc` in reads of the given sizes (cycled), each in a buffer of its own; the reader's result.
 * A read the reader does not keep is detached at once, as the front end frees it (flow.ts release).
 */
async function read(doc: Buffer, sizes: readonly number[], members = [DL, TD]) {
  let got: Map<string, Buffer> | undefined;
  let calls = 0;
  const r = new ReadBehind(
    members,
    (_k, raw) => named(raw),
    (found) => ((got = found), calls++),
  );
  for (let at = 0, n = 0; at < doc.length; n++) {
    const len = Math.min(sizes[n % sizes.length]!, doc.length - at);
    const own = new Uint8Array(len);
    own.set(doc.subarray(at, at + len));
    if (!r.data(own, 0, len)) free(own);
    at += len;
  }
  r.end();
  await new Promise((res) => setImmediate(res));
  await new Promise((res) => setImmediate(res));
  expect(calls).toBeLessThanOrEqual(1);
  return got;
}

const member = fc.oneof(
  value,
  fc.constant({ changed: ["@a:x"], left: [] }),
  fc.constant({ events: [{ sender: "@b:x", type: "m.room.encrypted" }] }),
  value.map((v) => ({ changed: ["@c:x"], v })),
);
// The members nested where an attacker writes (event content): never to be read.
const nested = member.map((v) => ({
  rooms: { join: { "!r:x": { timeline: { events: [{ content: { [DL]: v, x: [{ [TD]: v }] } }] } } } },
}));
const key = fc.oneof(fc.constantFrom(DL, TD, "next_batch", "rooms"), fc.string({ maxLength: 4 }));
const body = fc.array(fc.tuple(key, fc.oneof(member, nested)), { maxLength: 7 });

describe("ReadBehind reads the top-level members a full parse gives, and no others", () => {
  test("any object, any chunking, members anywhere and at any depth, escaped keys, duplicates", async () => {
    await fc.assert(
      fc.asyncProperty(body, fc.nat(), chunking, async (entries, seed, sizes) => {
        const text = serialise(entries, seed);
        const whole = JSON.parse(text) as Record<string, unknown>;
        const got = await read(Buffer.from(text), sizes);
        for (const k of [DL, TD]) {
          const last = Object.hasOwn(whole, k) ? whole[k] : undefined;
          const raw = got?.get(k);
          if (last !== undefined && JSON.stringify(last).includes("@")) {
            // The one a client keeps (the last occurrence), exactly.
            expect(raw && JSON.parse(raw.toString())).toEqual(last);
          } else if (raw !== undefined) {
            // Read on the way to another member: only ever the top-level one, and nothing in it.
            expect(JSON.parse(raw.toString())).toEqual(last);
            expect(named(raw)).toBe(false);
          }
        }
      }),
      { numRuns: 1500 },
    );
  });

  // The parse starts at the member: a body broken only before it is not looked at there
  // (its client cannot parse it, so what we learn from it is moot).
  test("a body broken at or after the member gives nothing", async () => {
    for (const text of [
      `{"${TD}":{"changed":["@a:x"]}`,
      `{"${TD}":{"changed":["@a:x"]}}}`,
      `{"${TD}":{"changed":["@a:x"]}} x`,
      `{"${TD}":{"changed":["@a:x"]},}`,
      `{"${TD}":{"changed":["@a:x"]}]`,
    ])
      for (const sizes of [[1], [3], [1000]]) expect(await read(Buffer.from(text), sizes)).toBeUndefined();
  });
});

describe("large bodies (docs/performance.md, seventh session)", () => {
  const filler = (mb: number) =>
    `"rooms":{"join":{"!r:x":{"timeline":{"events":[${Array(Math.ceil((mb * 1e6) / 80))
      .fill(`{"type":"m.room.message","content":{"body":"${"x".repeat(40)}"}}`)
      .join(",")}]}}}}`;
  const big = filler(50);
  const wanted = `"${TD}":{"events":[{"sender":"@b:x","type":"m.room.encrypted"}]}`;

  test("a member after 50 MB of other members is read, and one nested in them is not", async () => {
    const tail = await read(Buffer.from(`{"next_batch":"s",${big},${wanted}}`), [65536]);
    expect(JSON.parse(tail!.get(TD)!.toString()).events[0].sender).toBe("@b:x");
    const nestedOnly = `{"next_batch":"s","x":{${wanted}},${big}}`;
    expect(await read(Buffer.from(nestedOnly), [65536])).toBeUndefined();
  });

  test("a member worth reading before 50 MB: at most BEHIND_BYTES of reads are kept, and it is read", async () => {
    const doc = Buffer.from(`{${wanted},${big}}`);
    let kept = 0;
    let keptMost = 0;
    let got: Map<string, Buffer> | undefined;
    const r = new ReadBehind(
      [DL, TD],
      (_k, raw) => named(raw),
      (found) => (got = found),
    );
    for (let at = 0; at < doc.length; at += 65536) {
      // Each read in a buffer of its own, larger than the read (as the kernel's may be).
      const space = new Uint8Array(4 * 65536);
      const n = Math.min(65536, doc.length - at);
      space.set(doc.subarray(at, at + n));
      if (r.data(space, 0, n)) kept += space.byteLength;
      else kept = 0; // a read not kept means those before it were read and let go
      keptMost = Math.max(keptMost, kept);
    }
    r.end();
    await new Promise((res) => setImmediate(res));
    expect(keptMost).toBeLessThanOrEqual(BEHIND_BYTES);
    expect(JSON.parse(got!.get(TD)!.toString()).events[0].sender).toBe("@b:x");
  });

  test("a body with no member worth reading keeps no read", async () => {
    const doc = Buffer.from(`{"${DL}":{"changed":[],"left":[]},${big}}`);
    const r = new ReadBehind(
      [DL, TD],
      (_k, raw) => named(raw),
      () => {
        throw new Error("nothing to read");
      },
    );
    for (let at = 0; at < doc.length; at += 65536)
      expect(r.data(doc.subarray(at, at + 65536), 0, Math.min(65536, doc.length - at))).toBe(false);
    r.end();
  });
});

describe("KeyFinder", () => {
  /** The first candidate's position in `doc`, found in reads of the given sizes (cycled). */
  const first = (doc: Buffer, sizes: readonly number[]): number => {
    const f = new KeyFinder([DL]);
    for (let at = 0, n = 0; at < doc.length; n++) {
      const len = Math.min(sizes[n % sizes.length]!, doc.length - at);
      const i = f.find(Buffer.from(doc.subarray(at, at + len)), 0, len);
      if (i !== -1) return at + i - (f.lead?.length ?? 0);
      at += len;
    }
    return -1;
  };

  test("the same first candidate however the body is cut, and one wherever the name is a real key", () => {
    const text = fc.string({
      unit: fc.constantFrom("a", "_", "device", "_lists", DL, '"', `"${DL}"`, "\\", "\\u005f", "\\u00e9", "é"),
      maxLength: 40,
    });
    fc.assert(
      fc.property(text, chunking, (t, sizes) => {
        const doc = Buffer.from(t);
        const whole = first(doc, [doc.length || 1]);
        expect(first(doc, sizes)).toBe(whole);
        // A key named so in an object: found, at its quote or before.
        const asKey = Buffer.from(`{"a":${JSON.stringify(t)},"${DL}":1}`);
        const at = asKey.lastIndexOf(`"${DL}"`);
        const found = first(asKey, sizes);
        expect(found).toBeGreaterThanOrEqual(0);
        expect(found).toBeLessThanOrEqual(at);
      }),
      { numRuns: 2000 },
    );
  });

  // Synapse frames a body in 4 KiB chunks, so one read carries several chunks and the finder is
  // called once per chunk, each a span of the same buffer with the framing between: a span must
  // be searched as if it were a read of its own, never past its end, and what the finder learnt
  // of one read never used for another, even in the same buffer object refilled later.
  test("every candidate, whether the chunks come as reads of their own or as spans of one buffer", async () => {
    const unit = fc.constantFrom("a", '"', "\\", "\\u0065", "\\u00e9", `"${TD}"`, `"${DL}"`, "_lists", "to_d");
    const text = fc.array(unit, { maxLength: 30 }).map((u) => u.join(""));
    // What separates the spans in the buffer: framing, or bytes that would make a candidate.
    const gap = fc.array(unit, { minLength: 1, maxLength: 3 }).map((u) => u.join(""));
    /** Every candidate's position in the text: after each one, the finder starts afresh past it. */
    const all = (spans: { buf: Uint8Array; start: number; end: number }[]): number[] => {
      const f = new KeyFinder([TD, DL]);
      const out: number[] = [];
      let offset = 0;
      for (const { buf, start, end } of spans) {
        for (let from = start; from < end; ) {
          const i = f.find(buf, from, end);
          if (i === -1) break;
          out.push(offset + i - start - (f.lead?.length ?? 0));
          f.reset();
          from = i + 1;
        }
        offset += end - start;
      }
      return out;
    };
    await fc.assert(
      fc.asyncProperty(
        text,
        chunking,
        fc.array(gap, { minLength: 1, maxLength: 4 }),
        fc.nat(3),
        async (t, sizes, gaps, perRead) => {
          const doc = Buffer.from(t);
          const cut: Buffer[] = [];
          for (let at = 0, n = 0; at < doc.length; n++) {
            const len = Math.min(sizes[n % sizes.length]!, doc.length - at);
            cut.push(doc.subarray(at, at + len));
            at += len;
          }
          const alone = all(cut.map((c) => ({ buf: Buffer.from(c), start: 0, end: c.length })));
          // The same chunks, perRead + 1 to a buffer, a gap before each.
          const spans: { buf: Uint8Array; start: number; end: number }[] = [];
          for (let k = 0; k < cut.length; k += perRead + 1) {
            const parts: Buffer[] = [];
            const at: [number, number][] = [];
            let len = 0;
            for (const [j, c] of cut.slice(k, k + perRead + 1).entries()) {
              const g = Buffer.from(gaps[(k + j) % gaps.length]!);
              parts.push(g, c);
              at.push([len + g.length, len + g.length + c.length]);
              len += g.length + c.length;
            }
            const whole = new Uint8Array(Buffer.concat(parts));
            for (const [start, end] of at) spans.push({ buf: whole, start, end });
          }
          expect(all(spans)).toEqual(alone);
          // One buffer object refilled with other bytes, read after a turn: searched afresh.
          const f = new KeyFinder([TD, DL]);
          const reused = Buffer.alloc(Math.max(doc.length, 16) + 16, 0x61);
          expect(f.find(reused, 0, reused.length)).toBe(-1);
          await new Promise((r) => setImmediate(r));
          const key = Buffer.from(`"${TD}"`);
          key.copy(reused, 3);
          f.reset();
          expect(f.find(reused, 0, reused.length)).toBe(3);
        },
      ),
      { numRuns: 1500 },
    );
  });

  test("finds the first possible key, however the reads are cut", () => {
    const texts = [
      [`{"a":"x\\"${TD}\\"","${TD}":1}`, 22],
      [`{"a\\\\":"${TD}"}`, 7],
      [`{"to_d\\u0065vice":1}`, 1],
      [`{"a":"\\u00e9\\ud83d","b":"\\\\u0065"}`, -1],
      [`{"${"x".repeat(200)}\\u0065":1}`, -1],
    ] as const;
    for (const [text, want] of texts)
      for (let size = 1; size <= text.length; size++) {
        const f = new KeyFinder([TD, DL]);
        let found = -1;
        for (let at = 0; at < text.length && found === -1; at += size) {
          const chunk = Buffer.from(text.slice(at, at + size));
          const i = f.find(chunk, 0, chunk.length);
          if (i !== -1) found = at + i - (f.lead?.length ?? 0);
        }
        expect([text, size, found]).toEqual([text, size, want]);
      }
  });
});
