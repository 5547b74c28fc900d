// Learn a few top-level members of a JSON object while its bytes stream past, without buffering
// or parsing the body: the proxy forwards the homeserver's /sync answer byte for byte and only
// needs its own small `device_lists` member (client-server API, GET /sync response body).
//
// Same idea as json-members.ts, made incremental: nearly all bytes of /sync sit inside strings,
// so strings are crossed with indexOf (native memchr) and only the short runs between strings
// are walked byte by byte. Chunk boundaries may fall anywhere, so every piece of state that a
// byte run can straddle (a backslash run, a key, a number, a literal, a captured value) is kept.
// Structure, nesting, keys, numbers and literals are checked (RFC 8259 §2–§6); string contents
// are not (control characters, escapes): that would cost a look at every byte.

const QUOTE = 0x22, BACKSLASH = 0x5c, OPEN_OBJ = 0x7b, CLOSE_OBJ = 0x7d, OPEN_ARR = 0x5b, CLOSE_ARR = 0x5d, COMMA = 0x2c, COLON = 0x3a;
// What the grammar expects next (outside strings and scalars).
const START = 0, OBJ_FIRST = 1, OBJ_KEY = 2, AFTER_KEY = 3, VALUE = 4, ARR_FIRST = 5, AFTER_VALUE = 6, END = 7, ERROR = 8;
// Number states (RFC 8259 §6): MINUS, DOT, EXP_MARK and EXP_SIGN still need a digit.
const MINUS = 1, ZERO = 2, INT = 3, DOT = 4, FRAC = 5, EXP_MARK = 6, EXP_SIGN = 7, EXP = 8;
const LITERALS: Record<number, Uint8Array> = { 0x74: Buffer.from("true"), 0x66: Buffer.from("false"), 0x6e: Buffer.from("null") };
/** A copy of buf[from, to): never keep the caller's buffer, which it reuses. (Buffer#slice
 *  would be a view, and Uint8Array.from walks an iterator.) */
function copy(buf: Uint8Array, from: number, to: number): Uint8Array {
  const out = new Uint8Array(to - from);
  out.set(buf.subarray(from, to));
  return out;
}
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;

/** The next number state after byte `b`, or 0 when `b` does not continue the number. */
function numberStep(s: number, b: number): number {
  if (isDigit(b)) return s === MINUS ? (b === 0x30 ? ZERO : INT) : s === ZERO ? 0 : s === DOT ? FRAC : s === EXP_MARK || s === EXP_SIGN ? EXP : s;
  if (b === 0x2e) return s === ZERO || s === INT ? DOT : 0;
  if (b === 0x65 || b === 0x45) return s === ZERO || s === INT || s === FRAC ? EXP_MARK : 0;
  if (b === 0x2b || b === 0x2d) return s === EXP_MARK ? EXP_SIGN : 0;
  return 0;
}

export class TopLevelCapture {
  private readonly wanted: { key: string; bytes: Uint8Array | undefined }[];
  private readonly maxKeyBytes: number; // a raw key longer than this cannot decode to a wanted key
  private readonly maxValueBytes: number;
  private readonly found = new Map<string, Buffer>();
  private state = START;
  private stack = new Uint8Array(64); // open containers: 1 object, 2 array
  private depth = 0;
  private inString = false;
  private pendingEscape = false; // the string's last byte so far is an unpaired backslash
  private num = 0; // number state, 0 outside a number
  private lit: Uint8Array | undefined; // the literal being read, and how far
  private litPos = 0;
  private topKey = false; // the open string is a key of the top-level object
  private keyParts: Uint8Array[] = [];
  private keyLen = 0; // -1 once too long to match
  private pending: string | undefined; // wanted key whose value comes next
  private capKey: string | undefined; // wanted key whose value is being copied
  private capParts: Uint8Array[] = [];
  private capLen = 0; // -1 once over maxValueBytes
  private done = false;

  /** keys: top-level member names to capture; maxValueBytes: a longer value is not kept. */
  constructor(keys: readonly string[], maxValueBytes = 4 * 1024 * 1024) {
    // Raw-byte comparison only for keys that survive UTF-8 (a lone surrogate does not); escaped
    // document keys are decoded and compared as strings. \uXXXX is 6 bytes per UTF-16 unit.
    this.wanted = keys.map((key) => {
      const bytes = Buffer.from(key);
      return { key, bytes: bytes.toString() === key ? bytes : undefined };
    });
    this.maxKeyBytes = Math.max(0, ...keys.map((k) => 6 * k.length));
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
      this.scan(end === buf.length ? buf : buf.subarray(0, end), start, end);
    } catch {
      this.state = ERROR;
    }
  }

  /** After the last chunk: the raw bytes of each wanted member's value, or undefined when the
   *  document was not one well-formed object. A value over maxValueBytes is absent. */
  finish(): Map<string, Buffer> | undefined {
    this.done = true;
    return this.state === END ? this.found : undefined;
  }

  private scan(data: Uint8Array, start: number, end: number): void {
    let i = start;
    let low = start; // backslash runs are counted back to here, never into an earlier chunk
    let keyFrom = start; // where the open top-level key's bytes start in this chunk
    let capFrom = start; // where the captured value's bytes start in this chunk
    if (this.inString && this.pendingEscape) {
      this.pendingEscape = false; // the escaped byte opens this chunk: one byte, whatever it is
      i = low = start + 1;
    }
    while (i < end) {
      if (this.inString) {
        let q = data.indexOf(QUOTE, i);
        while (q !== -1) {
          let j = q - 1;
          while (j >= low && data[j] === BACKSLASH) j--;
          if ((q - 1 - j) % 2 === 0) break; // an even run of backslashes: the quote is real
          q = data.indexOf(QUOTE, q + 1);
        }
        if (q === -1) {
          let j = end - 1;
          while (j >= low && data[j] === BACKSLASH) j--;
          this.pendingEscape = (end - 1 - j) % 2 === 1;
          break;
        }
        this.inString = false;
        i = q + 1;
        if (this.state === AFTER_KEY) {
          if (this.topKey) this.keyEnd(data, keyFrom, q); // may set ERROR: the next byte stops the scan
        } else if (this.capKey !== undefined && this.depth === 1) this.capEnd(data, capFrom, i);
        continue;
      }
      const b = data[i]!;
      if (this.num !== 0 || this.lit !== undefined) {
        if (this.lit !== undefined) {
          if (this.litPos < this.lit.length) {
            if (b !== this.lit[this.litPos++]) return void (this.state = ERROR);
            i++;
            continue;
          }
          this.lit = undefined;
        } else {
          const next = numberStep(this.num, b);
          if (next !== 0) {
            this.num = next;
            i++;
            continue;
          }
          if (this.num !== ZERO && this.num !== INT && this.num !== FRAC && this.num !== EXP) return void (this.state = ERROR);
          this.num = 0;
        }
        if (this.capKey !== undefined && this.depth === 1) this.capEnd(data, capFrom, i);
        // `b` ends the scalar; it is read below as the byte after a value.
      }
      i++;
      if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09) continue;
      switch (this.state) {
        case START:
          if (b !== OPEN_OBJ) return void (this.state = ERROR);
          this.push(1);
          this.state = OBJ_FIRST;
          break;
        case OBJ_FIRST:
        case OBJ_KEY:
          if (b === QUOTE) {
            this.inString = true;
            this.state = AFTER_KEY;
            low = i;
            this.topKey = this.depth === 1;
            if (this.topKey) {
              keyFrom = i;
              this.keyParts = [];
              this.keyLen = 0;
            }
          } else if (b === CLOSE_OBJ && this.state === OBJ_FIRST) this.close(1);
          else return void (this.state = ERROR);
          break;
        case AFTER_KEY:
          if (b !== COLON) return void (this.state = ERROR);
          this.state = VALUE;
          break;
        case VALUE:
        case ARR_FIRST:
          if (b === CLOSE_ARR && this.state === ARR_FIRST) {
            this.close(2);
            break;
          }
          if (this.depth === 1 && this.pending !== undefined) {
            this.capKey = this.pending;
            this.pending = undefined;
            this.capParts = [];
            this.capLen = 0;
            capFrom = i - 1;
          }
          this.state = AFTER_VALUE;
          if (b === QUOTE) {
            this.inString = true;
            low = i;
          } else if (b === OPEN_OBJ || b === OPEN_ARR) {
            this.push(b === OPEN_OBJ ? 1 : 2);
            this.state = b === OPEN_OBJ ? OBJ_FIRST : ARR_FIRST;
          } else if (b === 0x2d || isDigit(b)) this.num = b === 0x2d ? MINUS : b === 0x30 ? ZERO : INT;
          else if ((this.lit = LITERALS[b]) !== undefined) this.litPos = 1;
          else return void (this.state = ERROR);
          break;
        case AFTER_VALUE:
          if (b === COMMA) this.state = this.stack[this.depth - 1] === 1 ? OBJ_KEY : VALUE;
          else if (b === CLOSE_OBJ || b === CLOSE_ARR) this.close(b === CLOSE_OBJ ? 1 : 2);
          else return void (this.state = ERROR);
          break;
        default: // END (only whitespace may follow the object) or ERROR
          return void (this.state = ERROR);
      }
      if (this.state === ERROR) return;
      // A container value of a wanted key ends where the nesting comes back to the top object.
      if ((b === CLOSE_OBJ || b === CLOSE_ARR) && this.depth === 1 && this.capKey !== undefined) this.capEnd(data, capFrom, i);
    }
    // The chunk ends: keep copies of what straddles into the next one.
    if (this.inString && this.topKey && this.state === AFTER_KEY) this.keepKey(data.subarray(keyFrom, end));
    if (this.capKey !== undefined) this.keep(data, capFrom, end);
  }

  private push(kind: number): void {
    if (this.depth === this.stack.length) {
      const grown = new Uint8Array(this.stack.length * 2);
      grown.set(this.stack);
      this.stack = grown;
    }
    this.stack[this.depth++] = kind;
  }

  /** Close the innermost container, which must be of `kind`. */
  private close(kind: number): void {
    if (this.depth === 0 || this.stack[this.depth - 1] !== kind) return void (this.state = ERROR);
    this.depth--;
    this.state = this.depth === 0 ? END : AFTER_VALUE;
  }

  private keepKey(bytes: Uint8Array): void {
    if (this.keyLen < 0) return;
    if (this.keyLen + bytes.length > this.maxKeyBytes) return void (this.keyLen = -1);
    this.keyParts.push(copy(bytes, 0, bytes.length));
    this.keyLen += bytes.length;
  }

  /** A top-level key closed at `q`: is it wanted? (JSON.parse would decode it, so do we.) */
  private keyEnd(data: Uint8Array, from: number, q: number): void {
    this.pending = undefined;
    if (this.keyLen < 0) return;
    if (this.keyParts.length > 0) {
      this.keepKey(data.subarray(from, q));
      if (this.keyLen < 0) return;
    } else if (q - from > this.maxKeyBytes) return;
    const raw = this.keyParts.length > 0 ? Buffer.concat(this.keyParts) : data.subarray(from, q);
    this.keyParts = [];
    if (raw.indexOf(BACKSLASH) === -1) {
      for (const w of this.wanted) if (w.bytes !== undefined && Buffer.compare(w.bytes, raw) === 0) this.pending = w.key;
      return;
    }
    let key: unknown;
    try {
      key = JSON.parse(`"${Buffer.from(raw.buffer, raw.byteOffset, raw.length).toString()}"`);
    } catch {
      return void (this.state = ERROR); // a bad escape: JSON.parse of the document fails too
    }
    for (const w of this.wanted) if (w.key === key) this.pending = w.key;
  }

  /** Copy data[from, to) into the value being captured, unless it has grown too long. */
  private keep(data: Uint8Array, from: number, to: number): void {
    if (this.capLen < 0 || to <= from) return;
    if (this.capLen + (to - from) > this.maxValueBytes) {
      this.capLen = -1;
      this.capParts = [];
      return;
    }
    this.capParts.push(copy(data, from, to));
    this.capLen += to - from;
  }

  /** The captured value ends at `to`: the last occurrence of a key wins, as in JSON.parse. */
  private capEnd(data: Uint8Array, from: number, to: number): void {
    this.keep(data, from, to);
    const key = this.capKey!;
    if (this.capLen < 0) this.found.delete(key);
    else this.found.set(key, this.capParts.length === 1 ? Buffer.from(this.capParts[0]!.buffer) : Buffer.concat(this.capParts));
    this.capKey = undefined;
    this.capParts = [];
  }
}
