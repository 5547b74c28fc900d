// Find the top-level members of a JSON object without parsing its values. Injecting one user
// into a /sync body then touches only the small `device_lists` member: a full JSON.parse +
// JSON.stringify of a 1 MB body costs more than the whole latency budget (docs/performance.md).
//
// The scanner jumps from quote to quote with indexOf (native memchr) because nearly all bytes of
// a /sync body sit inside strings; only the short runs between strings are walked byte by byte.

const QUOTE = 0x22, BACKSLASH = 0x5c, OPEN_OBJ = 0x7b, CLOSE_OBJ = 0x7d, OPEN_ARR = 0x5b, CLOSE_ARR = 0x5d, COMMA = 0x2c, COLON = 0x3a;
const isSpace = (b: number | undefined) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;

export interface Member {
  start: number; // first byte of the value
  end: number; // one past its last byte
}

/** The index just past the string that opens at `at` (a quote), or -1 if it never closes. */
function stringEnd(buf: Uint8Array, at: number): number {
  let i = at + 1;
  for (;;) {
    const q = buf.indexOf(QUOTE, i);
    if (q === -1) return -1;
    let slashes = 0;
    for (let j = q - 1; buf[j] === BACKSLASH; j--) slashes++;
    if (slashes % 2 === 0) return q + 1;
    i = q + 1;
  }
}

/** The index just past the value that starts at `at`, or -1 when the JSON is malformed. */
function valueEnd(buf: Uint8Array, at: number): number {
  const first = buf[at];
  if (first === QUOTE) return stringEnd(buf, at);
  if (first !== OPEN_OBJ && first !== OPEN_ARR) {
    let i = at;
    while (i < buf.length && buf[i] !== COMMA && buf[i] !== CLOSE_OBJ && buf[i] !== CLOSE_ARR && !isSpace(buf[i])) i++;
    return i > at ? i : -1;
  }
  let depth = 0;
  for (let i = at; i < buf.length; i++) {
    const b = buf[i];
    if (b === QUOTE) {
      i = stringEnd(buf, i) - 1;
      if (i < 0) return -1;
    } else if (b === OPEN_OBJ || b === OPEN_ARR) depth++;
    else if (b === CLOSE_OBJ || b === CLOSE_ARR) {
      if (--depth === 0) return i + 1;
    }
  }
  return -1;
}

function skipSpace(buf: Uint8Array, i: number): number {
  while (isSpace(buf[i])) i++;
  return i;
}

/**
 * The members of the top-level object, or undefined when `buf` is not a well-formed object at
 * this level (nested values are only delimited, never validated: callers parse what they use).
 */
export function topLevelMembers(buf: Uint8Array): { open: number; members: Map<string, Member> } | undefined {
  const decoder = new TextDecoder();
  let i = skipSpace(buf, 0);
  if (buf[i] !== OPEN_OBJ) return undefined;
  const open = i;
  const members = new Map<string, Member>();
  i = skipSpace(buf, i + 1);
  if (buf[i] === CLOSE_OBJ) return skipSpace(buf, i + 1) === buf.length ? { open, members } : undefined;
  for (;;) {
    if (buf[i] !== QUOTE) return undefined;
    const keyEnd = stringEnd(buf, i);
    if (keyEnd === -1) return undefined;
    let key: string;
    try {
      key = JSON.parse(decoder.decode(buf.subarray(i, keyEnd))) as string;
    } catch {
      return undefined;
    }
    i = skipSpace(buf, keyEnd);
    if (buf[i] !== COLON) return undefined;
    const start = skipSpace(buf, i + 1);
    const end = valueEnd(buf, start);
    if (end === -1) return undefined;
    members.set(key, { start, end });
    i = skipSpace(buf, end);
    if (buf[i] === CLOSE_OBJ) return skipSpace(buf, i + 1) === buf.length ? { open, members } : undefined;
    if (buf[i] !== COMMA) return undefined;
    i = skipSpace(buf, i + 1);
  }
}

/** Parse one member's value. */
export function memberValue(buf: Uint8Array, m: Member | undefined): unknown {
  if (!m) return undefined;
  try {
    return JSON.parse(new TextDecoder().decode(buf.subarray(m.start, m.end)));
  } catch {
    return undefined;
  }
}

/**
 * `buf` with member `key` set to `value` (JSON-encoded): replaced in place when present,
 * otherwise inserted as the first member.
 */
export function withMember(buf: Uint8Array, layout: { open: number; members: Map<string, Member> }, key: string, value: unknown): Buffer {
  const encoded = Buffer.from(JSON.stringify(value));
  const m = layout.members.get(key);
  if (m) return Buffer.concat([buf.subarray(0, m.start), encoded, buf.subarray(m.end)]);
  const head = Buffer.from(`${JSON.stringify(key)}:`);
  const comma = layout.members.size > 0 ? Buffer.from(",") : Buffer.alloc(0);
  return Buffer.concat([buf.subarray(0, layout.open + 1), head, encoded, comma, buf.subarray(layout.open + 1)]);
}
