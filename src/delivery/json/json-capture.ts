// Learn a few top-level members of a JSON object while its bytes stream past, without buffering
// or parsing the body: the proxy forwards the homeserver's /sync answer byte for byte and only
// needs its own small `device_lists` member (client-server API, GET /sync response body), and
// where it sits, to splice into it (sync-splice.ts).
//
// Nearly all bytes of /sync sit inside strings, so a string is crossed with indexOf (native
// memchr) once it proves long, and only the short runs between strings go through the grammar,
// one table lookup per byte. Chunk boundaries may fall anywhere, so all that can straddle one (a
// backslash run, a key, a number, a literal, a captured value) is carried over; only the
// captured values and a split key are copied.
// Structure, nesting, keys, numbers and literals are checked (RFC 8259 §2–§6); string contents
// are not (control characters, escapes): that would cost a look at every byte.

import {
  QUOTE,
  BACKSLASH,
  OPEN_OBJ,
  CLOSE_OBJ,
  COMMA,
  COLON,
  START,
  OBJ_FIRST,
  OBJ_KEY,
  AFTER_KEY,
  VALUE,
  AFTER_VALUE,
  END,
  ERROR,
  STRING,
  PUSH,
  POP,
  NEXT,
  SCALAR_END,
  VALUE_START,
  TABLE,
} from "./json-grammar.ts";

/** A copy of buf[from, to): never keep the caller's buffer, which it reuses. (Buffer#slice
 *  would be a view, and Uint8Array.from walks an iterator.) */
function copy(buf: Uint8Array, from: number, to: number): Uint8Array {
  const out = new Uint8Array(to - from);
  out.set(buf.subarray(from, to));
  return out;
}
/** The index of the quote that closes the string being read in data[i, end), or -1 when the
 *  chunk ends inside the string, -2 when it ends on an unpaired backslash (the next chunk opens
 *  with an escaped byte). No escape is open at `i`. */
function closingQuote(data: Uint8Array, i: number, end: number): number {
  // Most /sync strings are short (median 10 bytes, 90% under 45): walking the first 32 bytes
  // costs less than a native call (measured: ~20% faster on Deno, even on Bun).
  for (const stop = Math.min(i + 32, end); i < stop; i++) {
    const c = data[i];
    if (c === QUOTE) return i;
    if (c === BACKSLASH) i++;
  }
  if (i >= end) return i > end ? -2 : -1;
  // A long string: jump from quote to quote; a quote is real after an even run of backslashes,
  // counted back no further than `low` (no escape is open there, the chunk may start there).
  const low = i;
  for (let q = data.indexOf(QUOTE, i); q !== -1; q = data.indexOf(QUOTE, q + 1)) {
    let j = q - 1;
    while (j >= low && data[j] === BACKSLASH) j--;
    if ((q - 1 - j) % 2 === 0) return q;
  }
  let j = end - 1;
  while (j >= low && data[j] === BACKSLASH) j--;
  return (end - 1 - j) % 2 === 1 ? -2 : -1;
}

/** The container stack, twice as deep (nesting depth is bounded only by the body's size). */
function grown(stack: Uint8Array): Uint8Array {
  const out = new Uint8Array(stack.length * 2);
  out.set(stack);
  return out;
}

/** Where wanted values and the document's own object sit in the chunk being fed: indexes into
 *  the `buf` passed to feed(), called while it runs (sync-splice.ts rewrites at these points). */
export interface CaptureEvents {
  /** The value of wanted member `key` starts at buf[at]. */
  valueStart(key: string, at: number): void;
  /** That value ends just before buf[at]. */
  valueEnd(key: string, at: number): void;
  /** buf[at] is the `}` that closes the top-level object; `empty`: it has no members. */
  closed(at: number, empty: boolean): void;
}

type Wanted = { key: string; bytes: Uint8Array | undefined }[];
// Made once per list of keys: a capture is made per body (read-behind.ts).
const wantedMade = new WeakMap<readonly string[], Wanted>();
function wantedOf(keys: readonly string[]): Wanted {
  let w = wantedMade.get(keys);
  if (w) return w;
  // Raw-byte comparison only for keys that survive UTF-8 (a lone surrogate does not); escaped
  // document keys are decoded and compared as strings. \uXXXX is 6 bytes per UTF-16 unit.
  w = keys.map((key) => {
    const bytes = Buffer.from(key);
    return { key, bytes: bytes.toString() === key ? bytes : undefined };
  });
  wantedMade.set(keys, w);
  return w;
}

export class TopLevelCapture {
  private readonly wanted: Wanted;
  private readonly maxKeyBytes: number; // a raw key longer than this cannot decode to a wanted key
  private readonly maxValueBytes: number;
  private readonly found = new Map<string, Buffer>();
  private state = START;
  private stack: Uint8Array = new Uint8Array(64); // open containers: 1 object, 2 array
  private depth = 0;
  private inString = false;
  private pendingEscape = false; // the string's last byte so far is an unpaired backslash
  private keyParts: Uint8Array[] = [];
  private keyLen = 0; // -1 once too long to match
  private pending: string | undefined; // wanted key whose value comes next
  private capKey: string | undefined; // wanted key whose value is being copied
  private capParts: Uint8Array[] = [];
  private capLen = 0; // -1 once over maxValueBytes
  private done = false;
  private readonly events: CaptureEvents | undefined;
  private readonly byReference: boolean;

  /**
   * keys: top-level member names to capture; maxValueBytes: a longer value is not kept.
   * byReference: a value being captured is a view of the bytes fed, not a copy, and so is one
   * read whole from one read that it fills at least half of (else it is copied when it ends):
   * the caller keeps a buffer unchanged and alive while viewsOf() says so.
   */
  constructor(keys: readonly string[], maxValueBytes = 4 * 1024 * 1024, events?: CaptureEvents, byReference = false) {
    this.events = events;
    this.byReference = byReference;
    this.wanted = wantedOf(keys);
    let maxKey = 0;
    for (const k of keys) maxKey = Math.max(maxKey, 6 * k.length);
    this.maxKeyBytes = maxKey;
    this.maxValueBytes = maxValueBytes;
  }

  /** The next bytes of the document: buf[start, end). Never throws; never keeps `buf`. */
  feed(buf: Uint8Array, start = 0, end = buf.length): void {
    if (this.state === ERROR) return;
    if (this.done) return void (this.state = ERROR); // bytes after the end of the document
    start = Math.max(0, start | 0);
    end = Math.min(buf.length, end | 0);
    if (start >= end) return;
    try {
      // A plain Uint8Array view ending at `end`: indexOf stops there, and element reads see one
      // type whether the caller passes a Buffer or not (Buffer reads measured ~10% slower on Bun).
      this.scan(new Uint8Array(buf.buffer, buf.byteOffset, end), start, end);
    } catch {
      this.state = ERROR;
    }
  }

  /** Do the values kept (byReference) view bytes of `buffer`? */
  viewsOf(buffer: ArrayBufferLike): boolean {
    if (!this.byReference) return false;
    for (const p of this.capParts) if (p.buffer === buffer) return true;
    for (const v of this.found.values()) if (v.buffer === buffer) return true;
    return false;
  }

  /** A wanted key has been read and its value has not started yet. */
  get awaiting(): string | undefined {
    return this.pending;
  }

  /** The bytes so far end inside a top-level key. */
  get inKey(): boolean {
    return this.inString && this.state === AFTER_KEY && this.depth === 1;
  }

  /** The bytes so far are not the start of one JSON object: no more events will come. */
  get failed(): boolean {
    return this.state === ERROR || (this.done && this.state !== END);
  }

  /** The raw bytes of wanted member `key`'s value, once it has been read whole. */
  value(key: string): Buffer | undefined {
    return this.found.get(key);
  }

  /** After the last chunk: the raw bytes of each wanted member's value, or undefined when the
   *  document was not one well-formed object. A value over maxValueBytes is absent. */
  finish(): Map<string, Buffer> | undefined {
    this.done = true;
    return this.state === END ? this.found : undefined;
  }

  private scan(data: Uint8Array, start: number, end: number): void {
    // Hot state lives in locals for the loop and is written back when the chunk is done.
    let state = this.state,
      depth = this.depth,
      inString = this.inString,
      stack = this.stack;
    let i = start;
    let keyFrom = start; // where the open top-level key's bytes start in this chunk
    let capFrom = start; // where the captured value's bytes start in this chunk
    if (inString && this.pendingEscape) {
      this.pendingEscape = false; // the escaped byte opens this chunk: one byte, whatever it is
      i = start + 1;
    }
    while (i < end) {
      if (inString) {
        const q = closingQuote(data, i, end);
        if (q < 0) {
          this.pendingEscape = q === -2;
          break;
        }
        i = q + 1;
        if (state === AFTER_KEY) {
          if (depth === 1 && !this.keyEnd(data, keyFrom, q)) return void (this.state = ERROR);
          // Compact JSON's commonest runs skip the table: `":"` opens a string value at once,
          if (data[i] === COLON && data[i + 1] === QUOTE && this.pending === undefined) {
            i += 2;
            state = AFTER_VALUE;
            continue;
          }
        } else if (depth === 1 && this.capKey !== undefined) this.capEnd(data, capFrom, i);
        else if (data[i] === COMMA && data[i + 1] === QUOTE && depth > 1 && stack[depth - 1] === 1) {
          i += 2; // and `","` in a nested object opens the next key.
          state = AFTER_KEY;
          continue;
        }
        inString = false;
        continue;
      }
      const b = data[i++]!;
      const t = TABLE[(state << 8) | b]!;
      if (t < STRING) {
        state = t; // ERROR too: it stays ERROR for the rest of the chunk, and feed() stops there
        continue;
      }
      if (t & VALUE_START && this.pending !== undefined) {
        this.startCapture(this.pending); // only a top-level key sets `pending`; its value is next
        capFrom = i - 1;
        this.events?.valueStart(this.capKey!, capFrom);
      }
      if (t & STRING) {
        inString = true;
        state = t & 31;
        if (state === AFTER_KEY && depth === 1) {
          keyFrom = i;
          this.keyParts = [];
          this.keyLen = 0;
        }
        continue;
      }
      // A number ends on the byte after it; a value of a wanted key is complete.
      if (t & SCALAR_END && depth === 1 && this.capKey !== undefined) this.capEnd(data, capFrom, i - 1);
      if (t & PUSH) {
        if (depth === stack.length) stack = this.stack = grown(stack);
        stack[depth++] = b === OPEN_OBJ ? 1 : 2;
        state = t & 31;
      } else if (t & POP) {
        if (stack[depth - 1] !== (b === CLOSE_OBJ ? 1 : 2)) return void (this.state = ERROR);
        if (depth === 1) this.events?.closed(i - 1, state === OBJ_FIRST);
        state = --depth === 0 ? END : AFTER_VALUE;
        // A container value of a wanted key ends where the nesting comes back to the top object.
        if (depth === 1 && this.capKey !== undefined) this.capEnd(data, capFrom, i);
      } else if (t & NEXT) state = stack[depth - 1] === 1 ? OBJ_KEY : VALUE;
      else state = t & 31;
    }
    this.state = state;
    this.depth = depth;
    this.inString = inString;
    // The chunk ends: keep copies of what straddles into the next one.
    if (inString && state === AFTER_KEY && depth === 1) this.keepKey(data.subarray(keyFrom, end));
    if (this.capKey !== undefined) this.keep(data, capFrom, end);
  }

  private startCapture(key: string): void {
    this.capKey = key;
    this.pending = undefined;
    this.capParts = [];
    this.capLen = 0;
  }

  private keepKey(bytes: Uint8Array): void {
    if (this.keyLen < 0) return;
    if (this.keyLen + bytes.length > this.maxKeyBytes) return void (this.keyLen = -1);
    this.keyParts.push(copy(bytes, 0, bytes.length));
    this.keyLen += bytes.length;
  }

  /** A top-level key closed at `q`: is it wanted? (JSON.parse would decode it, so do we.) */
  private keyEnd(data: Uint8Array, from: number, q: number): boolean {
    if (this.keyLen < 0) return true;
    if (this.keyParts.length > 0) {
      this.keepKey(data.subarray(from, q));
      if (this.keyLen < 0) return true;
    } else if (q - from > this.maxKeyBytes) return true;
    const raw = this.keyParts.length > 0 ? Buffer.concat(this.keyParts) : data.subarray(from, q);
    this.keyParts = [];
    if (raw.indexOf(BACKSLASH) === -1) {
      for (const w of this.wanted)
        if (w.bytes !== undefined && Buffer.compare(w.bytes, raw) === 0) this.pending = w.key;
      return true;
    }
    let key: unknown;
    try {
      key = JSON.parse(`"${Buffer.from(raw.buffer, raw.byteOffset, raw.length).toString()}"`);
    } catch {
      return false; // a bad escape: JSON.parse of the document fails too
    }
    for (const w of this.wanted) if (w.key === key) this.pending = w.key;
    return true;
  }

  /** Copy data[from, to) into the value being captured, unless it has grown too long. */
  private keep(data: Uint8Array, from: number, to: number): void {
    if (this.capLen < 0 || to <= from) return;
    if (this.capLen + (to - from) > this.maxValueBytes) {
      this.capLen = -1;
      this.capParts = [];
      return;
    }
    this.capLen += to - from;
    if (!this.byReference) return void this.capParts.push(copy(data, from, to));
    // Slices of one read, fed in turn, make one view (read-behind.ts feeds a read in slices).
    const last = this.capParts[this.capParts.length - 1];
    if (last !== undefined && last.buffer === data.buffer && last.byteOffset + last.length === data.byteOffset + from)
      this.capParts[this.capParts.length - 1] = new Uint8Array(last.buffer, last.byteOffset, last.length + to - from);
    else this.capParts.push(data.subarray(from, to));
  }

  /** The captured value ends at `to`: the last occurrence of a key wins, as in JSON.parse. */
  private capEnd(data: Uint8Array, from: number, to: number): void {
    this.keep(data, from, to);
    const key = this.capKey!;
    if (this.capLen < 0) this.found.delete(key);
    else {
      const one = this.capParts.length === 1 ? this.capParts[0]! : undefined;
      // A view keeps its whole read alive: only one it fills at least half of stays a view.
      const view = one !== undefined && (!this.byReference || one.buffer.byteLength <= 2 * one.length);
      this.found.set(key, view ? Buffer.from(one.buffer, one.byteOffset, one.length) : Buffer.concat(this.capParts));
    }
    this.capKey = undefined;
    this.capParts = [];
    this.events?.valueEnd(key, to);
  }
}
