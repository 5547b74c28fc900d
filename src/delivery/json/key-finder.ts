// Where a member named one of `names` may begin in a JSON byte stream, found without parsing
// (native indexOf, memchr speed): the opening quote of `"name"` that is not escaped, or of a
// short string holding a \u00XX escape of a character the names use (an escaped spelling of a
// name, RFC 8259 §7). Every real occurrence is found, at any depth, and some look-alikes: the
// caller's parse from that point tells the top-level member from the rest (read-behind.ts).
// Reads may be cut anywhere: the last bytes of each are kept (copied) for the next.

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const ESCAPE = Buffer.from("\\u00");
const EMPTY = new Uint8Array(0);

const lowerHex = (b: number | undefined): number => (b !== undefined && b >= 0x41 && b <= 0x46 ? b + 0x20 : (b ?? 0));

/** What a finder needs of its names, made once per list of names (a finder is made per body). */
interface Names {
  quoted: Buffer[];
  /** The names' bytes as the two lowercase hex digits a \u00XX escape spells them with. */
  chars: Set<number>;
  /** The longest raw string that can still decode to a name: every character escaped, and its quotes. */
  maxKey: number;
  keep: number;
  /** The longest match less one: a match straddling two reads has at most this much on either side. */
  span: number;
}
const made = new WeakMap<readonly string[], Names>();

function namesOf(names: readonly string[]): Names {
  const known = made.get(names);
  if (known) return known;
  const quoted = names.map((n) => Buffer.from(JSON.stringify(n)));
  const chars = new Set<number>();
  for (const n of names)
    for (const b of Buffer.from(n)) {
      const hex = b.toString(16).padStart(2, "0");
      chars.add((hex.charCodeAt(0) << 8) | hex.charCodeAt(1));
    }
  const maxKey = Math.max(0, ...names.map((n) => 6 * n.length)) + 2;
  const span = Math.max(ESCAPE.length + 2, ...quoted.map((q) => q.length)) - 1;
  const out = { quoted, chars, maxKey, keep: maxKey + 16, span };
  made.set(names, out);
  return out;
}

export class KeyFinder {
  readonly #quoted: Buffer[];
  readonly #chars: Set<number>;
  readonly #maxKey: number;
  readonly #keep: number;
  /** The last bytes of the reads before (a copy). */
  #tail: Uint8Array = EMPTY;
  // While find() runs: the read, and the tail it follows.
  #chunk: Uint8Array = EMPTY;
  #prev: Uint8Array = EMPTY;
  readonly #span: number;
  /** Set by find() when the candidate began in an earlier read: its bytes from there (a copy). */
  lead: Uint8Array | undefined;

  /** `names`: keep passing the same array for the same names (what is made of it is kept). */
  constructor(names: readonly string[]) {
    const n = namesOf(names);
    this.#quoted = n.quoted;
    this.#chars = n.chars;
    this.#maxKey = n.maxKey;
    this.#keep = n.keep;
    this.#span = n.span;
  }

  /** Forget the bytes kept from earlier reads: the next find() starts afresh at its `start`. */
  reset(): void {
    this.#tail = EMPTY;
    this.lead = undefined;
  }

  /**
   * The earliest candidate in buf[start, end): its index in buf, or `start` with `lead` set when
   * it began in the bytes kept from the read before; -1 when there is none.
   */
  find(buf: Uint8Array, start: number, end: number): number {
    this.lead = undefined;
    // Per read: no view made when the read is a whole Buffer (the front end's are), no closures.
    const chunk =
      start === 0 && end === buf.length && buf instanceof Buffer
        ? buf
        : Buffer.from(buf.buffer, buf.byteOffset + start, end - start);
    const tail = this.#tail;
    this.#chunk = chunk;
    this.#prev = tail;
    let best = Number.POSITIVE_INFINITY;
    if (tail.length > 0) {
      // Only a match that straddles the two reads: one wholly in the tail was seen before.
      const edge = Math.min(tail.length, this.#span);
      const joint = Buffer.concat([tail.subarray(tail.length - edge), chunk.subarray(0, this.#span)]);
      best = this.#search(joint, -edge, edge, best);
    }
    best = this.#search(chunk, 0, 0, best);
    // Keep the last bytes (a copy: the caller's read may be released once sent).
    this.#tail =
      chunk.length >= this.#keep
        ? Uint8Array.prototype.slice.call(chunk, chunk.length - this.#keep)
        : Buffer.concat([tail, chunk]).subarray(-this.#keep);
    this.#chunk = EMPTY;
    if (best === Number.POSITIVE_INFINITY) return -1;
    if (best >= 0) return start + best;
    this.lead = Uint8Array.prototype.slice.call(tail, tail.length + best);
    return start;
  }

  /** Whether buf[start, end) holds a candidate wholly, whatever came before (the kept bytes are untouched). */
  holds(buf: Uint8Array, start: number, end: number): boolean {
    const chunk = Buffer.from(buf.buffer, buf.byteOffset + start, end - start);
    this.#chunk = chunk;
    this.#prev = EMPTY;
    const found = this.#search(chunk, 0, 0, Number.POSITIVE_INFINITY) !== Number.POSITIVE_INFINITY;
    this.#chunk = EMPTY;
    return found;
  }

  /** The earliest candidate before `best` among matches in `hay` (chunk positions: index + shift) ending past `minEnd`. */
  #search(hay: Buffer, shift: number, minEnd: number, best: number): number {
    for (const q of this.#quoted)
      for (let i = hay.indexOf(q); i !== -1 && i + shift < best; i = hay.indexOf(q, i + 1))
        if (i + q.length > minEnd && this.#unescaped(i + shift)) {
          best = i + shift;
          break;
        }
    for (let i = hay.indexOf(ESCAPE); i !== -1; i = hay.indexOf(ESCAPE, i + 1)) {
      if (i + 6 > hay.length) break; // the next read's search sees it whole
      if (i + 6 <= minEnd || i + shift - this.#maxKey >= best) continue;
      const q = this.#escapedName(i + shift);
      if (q !== undefined && q < best) best = q;
    }
    return best;
  }

  /** The byte at chunk position `i`; negative positions are in the bytes kept from before. */
  #at(i: number): number | undefined {
    return i >= 0 ? this.#chunk[i] : this.#prev[this.#prev.length + i];
  }

  /** Is the quote at `i` a real one: an even run of backslashes before it (or too long a run to tell)? */
  #unescaped(i: number): boolean {
    const low = -this.#prev.length;
    let j = i - 1;
    while (j >= low && this.#at(j) === BACKSLASH) j--;
    return (i - 1 - j) % 2 === 0 || j < low;
  }

  /** For a \u00XX at `i` that spells a name's character: the quote opening its string, if near enough. */
  #escapedName(i: number): number | undefined {
    // A backslash that is itself escaped starts no escape.
    if (!this.#unescaped(i)) return undefined;
    if (!this.#chars.has((lowerHex(this.#at(i + 4)) << 8) | lowerHex(this.#at(i + 5)))) return undefined;
    // Inside a string every quote is escaped: the first real one back is the string's own.
    for (let j = i - 1; j >= Math.max(-this.#prev.length, i - this.#maxKey); j--)
      if (this.#at(j) === QUOTE && this.#unescaped(j)) return j;
    return undefined;
  }
}
