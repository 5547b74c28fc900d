// Detection's clues read straight from the raw bytes of a /sync body's `to_device` value
// (to-device-watch.ts), without materialising its events: JSON.parse of the value made a string
// of every ciphertext and an object of every content, about three times the body's size in
// garbage per /sync, whose collections were most of detection's p99 (docs/performance.md,
// eighth session). Only the fields the checks look at are decoded, and each event goes through
// the same checks (to-device-clues.ts clueOf), so the clues are those of cluesOf(JSON.parse(raw)):
// the last of duplicate keys wins, escaped keys and strings decode as JSON.parse decodes them.
// The value's structure has been checked by json-capture.ts (RFC 8259 §2–§6); as there, string
// contents are not, except those of the strings decoded here.
import { clueOf, MAX_EVENTS, type ToDeviceClue } from "./to-device-clues.ts";

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_OBJ = 0x7b;
const CLOSE_OBJ = 0x7d;
const OPEN_ARR = 0x5b;
const CLOSE_ARR = 0x5d;
const COMMA = 0x2c;
const COLON = 0x3a;
/** A string longer than this (raw, escapes and all) cannot pass any check: it is not decoded. */
const MAX_FIELD = 2048;

// The keys read, by level: the to_device object, an event, its content.
const EVENTS = 0;
const SENDER = 1;
const TYPE = 2;
const CONTENT = 3;
const ALGORITHM = 4;
const SENDER_KEY = 5;
const REQUESTING = 6;
const FROM_DEVICE = 7;
const ACTION = 8;
const NAMES = [
  "events",
  "sender",
  "type",
  "content",
  "algorithm",
  "sender_key",
  "requesting_device_id",
  "from_device",
  "action",
];
const NAME_BYTES = NAMES.map((n) => Buffer.from(n));
// Strings decoded, by field (sender, type, the content's fields): most repeat from one event to
// the next, and the last one's bytes are compared before decoding again (a native call each).
const FIELDS = ACTION + 1;
const BY_NAME = new Map(NAMES.map((n, i) => [n, i]));

interface Content {
  algorithm: unknown;
  sender_key: unknown;
  requesting_device_id: unknown;
  from_device: unknown;
  action: unknown;
}

/** The clues of a `to_device` value's raw bytes; none when it is not an object with an `events` array. */
export function cluesIn(raw: Buffer): ToDeviceClue[] {
  try {
    return new Scan(raw).toDevice();
  } catch {
    // A bad escape in a string decoded here: JSON.parse would have refused the whole value.
    return [];
  }
}

class Scan {
  /** A plain view: element reads on a Buffer cost more (json-capture.ts). */
  readonly #b: Uint8Array;
  readonly #buf: Buffer;
  #i = 0;
  /** Per field: where its last decoded string's bytes were, [from, to), and that string. */
  readonly #lastAt = new Int32Array(2 * FIELDS);
  readonly #last: (string | undefined)[] = new Array(FIELDS);

  constructor(b: Buffer) {
    this.#buf = b;
    this.#b = new Uint8Array(b.buffer, b.byteOffset, b.length);
  }

  toDevice(): ToDeviceClue[] {
    let out: ToDeviceClue[] = [];
    if (this.#ws() !== OPEN_OBJ) return out;
    this.#i++;
    if (this.#ws() === CLOSE_OBJ) return out;
    for (;;) {
      const key = this.#key();
      if (key === EVENTS) out = this.#ws() === OPEN_ARR ? this.#events() : (this.#skip(), []);
      else this.#skip();
      if (this.#next()) return out;
    }
  }

  #events(): ToDeviceClue[] {
    const out: ToDeviceClue[] = [];
    this.#i++;
    if (this.#ws() === CLOSE_ARR) {
      this.#i++;
      return out;
    }
    for (let n = 0; ; n++) {
      if (n < MAX_EVENTS && this.#ws() === OPEN_OBJ) {
        const clue = this.#event();
        if (clue) out.push(clue);
      } else this.#skip();
      if (this.#next()) return out;
    }
  }

  #event(): ToDeviceClue | undefined {
    let sender: unknown, type: unknown, content: Content | null | undefined;
    this.#i++;
    if (this.#ws() === CLOSE_OBJ) {
      this.#i++;
      return undefined;
    }
    for (;;) {
      const key = this.#key();
      if (key === SENDER) sender = this.#string(key);
      else if (key === TYPE) type = this.#string(key);
      else if (key === CONTENT) content = this.#ws() === OPEN_OBJ ? this.#content() : (this.#skip(), null);
      else this.#skip();
      if (this.#next()) break;
    }
    return content ? clueOf({ sender, type, content }) : undefined;
  }

  #content(): Content {
    const c: Content = {
      algorithm: undefined,
      sender_key: undefined,
      requesting_device_id: undefined,
      from_device: undefined,
      action: undefined,
    };
    this.#i++;
    if (this.#ws() === CLOSE_OBJ) {
      this.#i++;
      return c;
    }
    for (;;) {
      const key = this.#key();
      if (key === ALGORITHM) c.algorithm = this.#string(key);
      else if (key === SENDER_KEY) c.sender_key = this.#string(key);
      else if (key === REQUESTING) c.requesting_device_id = this.#string(key);
      else if (key === FROM_DEVICE) c.from_device = this.#string(key);
      else if (key === ACTION) c.action = this.#string(key);
      else this.#skip();
      if (this.#next()) return c;
    }
  }

  /** The byte at the cursor after any whitespace. */
  #ws(): number {
    const b = this.#b;
    let c = b[this.#i];
    while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) c = b[++this.#i];
    if (c === undefined) throw new Error("truncated");
    return c;
  }

  /** After a member or an element: true when its container closes (the cursor then past it). */
  #next(): boolean {
    const c = this.#ws();
    this.#i++;
    if (c === COMMA) return false;
    if (c === CLOSE_OBJ || c === CLOSE_ARR) return true;
    throw new Error("not JSON");
  }

  /** A member's key and its colon: the key's index in NAMES, or -1. */
  #key(): number {
    if (this.#ws() !== QUOTE) throw new Error("not a key");
    const from = this.#i + 1;
    const to = this.#close();
    if (this.#ws() !== COLON) throw new Error("no colon");
    this.#i++;
    const len = to - from;
    if (len > MAX_FIELD) return -1;
    if (this.#escaped(from, to)) return BY_NAME.get(this.#decode(from, to)) ?? -1;
    const b = this.#b;
    next: for (let k = 0; k < NAME_BYTES.length; k++) {
      const n = NAME_BYTES[k]!;
      if (n.length !== len) continue;
      for (let j = 0; j < len; j++) if (n[j] !== b[from + j]) continue next;
      return k;
    }
    return -1;
  }

  /** A value that is to be a string: the string, or null for any other value (or one too long to pass). */
  #string(field: number): string | null {
    if (this.#ws() !== QUOTE) {
      this.#skip();
      return null;
    }
    const from = this.#i + 1;
    const to = this.#close();
    if (to - from > MAX_FIELD) return null;
    const at = this.#lastAt;
    const last = this.#last[field];
    if (last !== undefined && this.#same(at[2 * field]!, at[2 * field + 1]!, from, to)) return last;
    const text = this.#escaped(from, to) ? this.#decode(from, to) : this.#buf.toString("utf8", from, to);
    at[2 * field] = from;
    at[2 * field + 1] = to;
    this.#last[field] = text;
    return text;
  }

  /** Do b[a, aEnd) and b[from, to) hold the same bytes? */
  #same(a: number, aEnd: number, from: number, to: number): boolean {
    if (aEnd - a !== to - from) return false;
    const b = this.#b;
    for (let k = 0; k < to - from; k++) if (b[a + k] !== b[from + k]) return false;
    return true;
  }

  #escaped(from: number, to: number): boolean {
    for (let k = from; k < to; k++) if (this.#b[k] === BACKSLASH) return true;
    return false;
  }

  /** The string b[from, to) decoded as JSON.parse decodes it (throws on a bad escape). */
  #decode(from: number, to: number): string {
    return JSON.parse(this.#buf.toString("utf8", from - 1, to + 1)) as string;
  }

  /** At a string's opening quote: moves past its closing quote, and returns that quote's index. */
  #close(): number {
    const b = this.#b;
    const from = this.#i + 1;
    // Most strings here are short: walking them costs less than a native call (json-capture.ts).
    let k = from;
    for (const stop = Math.min(from + 32, b.length); k < stop; k++) {
      const c = b[k];
      if (c === QUOTE) return ((this.#i = k + 1), k);
      if (c === BACKSLASH) k++;
    }
    // No escape is open at `k`: a quote after it is real after an even run of backslashes.
    const low = k;
    for (let q = b.indexOf(QUOTE, k); q !== -1; q = b.indexOf(QUOTE, q + 1)) {
      let j = q - 1;
      while (j >= low && b[j] === BACKSLASH) j--;
      if ((q - 1 - j) % 2 === 0) return ((this.#i = q + 1), q);
    }
    throw new Error("unterminated string");
  }

  /** Moves past the value at the cursor, whatever it is. */
  #skip(): void {
    const b = this.#b;
    const c = this.#ws();
    if (c === QUOTE) return void this.#close();
    if (c !== OPEN_OBJ && c !== OPEN_ARR) {
      // A number or a literal: it ends at the next structural byte or whitespace.
      let d = b[++this.#i];
      while (d !== undefined && d !== COMMA && d !== CLOSE_OBJ && d !== CLOSE_ARR && d > 0x20) d = b[++this.#i];
      return;
    }
    for (let depth = 0; ; ) {
      const d = b[this.#i];
      if (d === undefined) throw new Error("truncated");
      if (d === QUOTE) {
        this.#close();
        continue;
      }
      this.#i++;
      if (d === OPEN_OBJ || d === OPEN_ARR) depth++;
      else if ((d === CLOSE_OBJ || d === CLOSE_ARR) && --depth === 0) return;
    }
  }
}
