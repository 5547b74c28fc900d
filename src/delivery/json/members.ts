// The members of a JSON object in a buffer, found by byte offsets without parsing their values
// (RFC 8259 §4): what keys-splice.ts needs to replace a few entries of a large answer and pass
// every other byte on as it came. Strings are skipped with a native search for the next quote,
// so a body made mostly of strings (a /keys/query answer is) costs little more than a memchr.
// Not a validator: a malformed value between the ones we look at goes on as it came, which is no
// worse than the homeserver's own bytes; the structure around the parts we use is checked, and
// anything unexpected there throws (the caller then takes the whole-parse path).

export interface Member {
  /** The key, decoded. */
  key: string;
  /** Offset of the key's opening quote. */
  keyStart: number;
  valueStart: number;
  /** One past the value's last byte. */
  valueEnd: number;
  /** The value's own members, when it is an object the caller asked to look into. */
  inner?: ObjectSpan;
}

export interface ObjectSpan {
  /** Offset of `{`. */
  start: number;
  /** Offset of the closing `}`. */
  close: number;
  members: Member[];
}

const QUOTE = 0x22,
  BACKSLASH = 0x5c,
  OPEN_OBJ = 0x7b,
  CLOSE_OBJ = 0x7d,
  OPEN_ARR = 0x5b,
  CLOSE_ARR = 0x5d,
  COMMA = 0x2c,
  COLON = 0x3a;

export class Malformed extends Error {}
const bad = (what: string, at: number): never => {
  throw new Malformed(`${what} at byte ${at}`);
};

export function skipWs(b: Uint8Array, i: number): number {
  for (;;) {
    const c = b[i];
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return i;
    i++;
  }
}

/** `i` at a string's opening quote: the offset just past its closing quote. */
function stringEnd(b: Uint8Array, i: number): number {
  let from = i + 1;
  for (;;) {
    const q = b.indexOf(QUOTE, from);
    if (q < 0) return bad("unterminated string", i);
    // A quote preceded by an odd run of backslashes is escaped.
    let k = q - 1;
    while (b[k] === BACKSLASH) k--;
    if (((q - 1 - k) & 1) === 0) return q + 1;
    from = q + 1;
  }
}

/** A scalar (number, true, false, null) at `i`: the offset past it. */
function scalarEnd(b: Uint8Array, i: number): number {
  let j = i;
  for (;;) {
    const c = b[j];
    if (
      c === undefined ||
      c === COMMA ||
      c === CLOSE_OBJ ||
      c === CLOSE_ARR ||
      c === 0x20 ||
      c === 0x0a ||
      c === 0x0d ||
      c === 0x09
    )
      break;
    j++;
  }
  if (j === i) bad("value expected", i);
  return j;
}

/** `i` at a value's first byte: the offset just past the value. */
export function skipValue(b: Uint8Array, i: number): number {
  const first = b[i];
  if (first === QUOTE) return stringEnd(b, i);
  if (first !== OPEN_OBJ && first !== OPEN_ARR) return scalarEnd(b, i);
  let depth = 0;
  for (;;) {
    const c = b[i];
    if (c === QUOTE) {
      i = stringEnd(b, i);
      continue;
    }
    if (c === OPEN_OBJ || c === OPEN_ARR) depth++;
    else if (c === CLOSE_OBJ || c === CLOSE_ARR) {
      if (--depth === 0) return i + 1;
    } else if (c === undefined) return bad("unterminated value", i);
    i++;
  }
}

const decoder = new TextDecoder();

/** A key's text: plain bytes are decoded as they are, escapes through JSON.parse. */
function keyOf(b: Uint8Array, start: number, end: number): string {
  const inner = b.subarray(start + 1, end - 1);
  if (inner.indexOf(BACKSLASH) < 0) return decoder.decode(inner);
  return JSON.parse(decoder.decode(b.subarray(start, end))) as string;
}

export interface Look {
  /** Keys whose values are read as objects in the same pass (Member.inner), when they are objects. */
  into?: ReadonlySet<string>;
  /** Within those: where a member's value ends, when the caller already knows (else undefined). */
  known?: (key: string, valueStart: number) => number | undefined;
}

/**
 * The object whose `{` is at `i`: its members, in order, and where it closes. `look` lets a
 * large answer be scanned once, and a value the caller has seen before not at all.
 */
export function objectAt(b: Uint8Array, i: number, look?: Look): ObjectSpan {
  if (b[i] !== OPEN_OBJ) bad("object expected", i);
  const start = i;
  const members: Member[] = [];
  i = skipWs(b, i + 1);
  if (b[i] === CLOSE_OBJ) return { start, close: i, members };
  for (;;) {
    if (b[i] !== QUOTE) bad("key expected", i);
    const keyStart = i;
    const keyEnd = stringEnd(b, i);
    i = skipWs(b, keyEnd);
    if (b[i] !== COLON) bad("colon expected", i);
    const valueStart = skipWs(b, i + 1);
    const key = keyOf(b, keyStart, keyEnd);
    if (look?.into?.has(key) && b[valueStart] === OPEN_OBJ) {
      const inner = objectAt(b, valueStart, look.known && { known: look.known });
      members.push({ key, keyStart, valueStart, valueEnd: inner.close + 1, inner });
      i = skipWs(b, inner.close + 1);
    } else {
      const valueEnd = look?.known?.(key, valueStart) ?? skipValue(b, valueStart);
      members.push({ key, keyStart, valueStart, valueEnd });
      i = skipWs(b, valueEnd);
    }
    if (b[i] === CLOSE_OBJ) return { start, close: i, members };
    if (b[i] !== COMMA) bad("comma expected", i);
    i = skipWs(b, i + 1);
  }
}
