// JSON text that puts escapes, whitespace and look-alike keys on every chunk boundary: shared
// by the streaming scanners' tests (json-capture, sync-splice).
import fc from "fast-check";

export const DL = "device_lists";

const rand = (seed: number) => () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) / 2 ** 24;
const hex4 = (c: number) => c.toString(16).padStart(4, "0");

/** An object written member by member, duplicate keys and all (serialise). */
export class Members {
  readonly entries: [string, unknown][];
  constructor(entries: [string, unknown][]) {
    this.entries = entries;
  }
}

/** JSON text for `entries` (duplicate keys allowed, and in nested Members) with random whitespace and random \uXXXX
 *  escapes in keys and strings, so escapes and spaces land on every kind of chunk boundary. */
export function serialise(entries: [string, unknown][], seed: number): string {
  const r = rand(seed);
  const ws = () => [" ", "", "", "\n  ", "\t", "\r\n"][Math.floor(r() * 6)]!;
  const str = (s: string) => {
    let out = '"';
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c === 0x22 || c === 0x5c) out += `\\${s[i]}`;
      else if (c < 0x20 || (c >= 0xd800 && c <= 0xdfff) || r() < 0.15)
        out += r() < 0.5 ? `\\u${hex4(c)}` : `\\u${hex4(c).toUpperCase()}`;
      else out += s[i];
    }
    return `${out}"`;
  };
  const val = (v: unknown): string => {
    if (typeof v === "string") return str(v);
    if (v instanceof Members) return obj(v.entries);
    if (Array.isArray(v)) return `[${ws()}${v.map((x) => val(x)).join(`${ws()},${ws()}`)}${ws()}]`;
    if (v !== null && typeof v === "object") return obj(Object.entries(v));
    return JSON.stringify(v);
  };
  const obj = (es: [string, unknown][]) =>
    `{${ws()}${es.map(([k, v]) => `${str(k)}${ws()}:${ws()}${val(v)}`).join(`${ws()},${ws()}`)}${ws()}}`;
  return `${ws()}${obj(entries)}${ws()}`;
}

const tricky = fc.string({
  unit: fc.constantFrom(
    "\\",
    '"',
    "\\\\",
    '\\"',
    "a",
    "é",
    "😀",
    "\u2028",
    "\u0000",
    "\n",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "_",
  ),
  maxLength: 60,
});
const key = fc.oneof(
  fc.string(),
  tricky,
  fc.string({ unit: "binary", maxLength: 6 }),
  fc.constantFrom(DL, "next_batch", "rooms", "__proto__"),
);
const leaf = fc.oneof(
  fc.jsonValue({ maxDepth: 0 }),
  tricky,
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.integer(),
);
export const { value } = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    leaf,
    fc.array(tie("value"), { maxLength: 4 }),
    fc.dictionary(key, tie("value"), { maxKeys: 4 }),
    fc.jsonValue({ maxDepth: 3 }),
  ),
}));
// device_lists nested where the attacker writes (event content), never at the top.
const nested = value.map((v) => ({
  rooms: { join: { "!r:x": { timeline: { events: [{ content: { [DL]: v, x: [{ [DL]: v }] } }] } } } },
}));
export const entries = fc.array(fc.tuple(key, fc.oneof(value, nested)), { maxLength: 7 });
export const chunking = fc.oneof(
  fc.constant([1]),
  fc.constant([1 << 20]),
  fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 8 }),
);
