// Where a member named one of `names` may begin in a JSON byte stream, found without parsing
// (native indexOf, memchr speed): the opening quote of `"name"` that is not escaped, or of a
// short string holding a \u00XX escape of a character the names use (an escaped spelling of a
// name, RFC 8259 §7). Every real occurrence is found, at any depth, and some look-alikes: the
// caller's parse from that point tells the top-level member from the rest (read-behind.ts).
// Reads may be cut anywhere: the last bytes of each are kept (copied) for the next.

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const ESCAPE = Buffer.from("\\u00");
const EMPTY = Buffer.alloc(0);

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
  readonly #span: number;
  /**
   * [keep - tailLen, keep): the last bytes of the reads before (copies); [keep, keep + span): the
   * head of the read in hand while a match straddling the two is looked for, zero otherwise.
   * Fixed, so a read costs no allocation (Synapse frames its answers in 4 KiB chunks: a finder
   * is called per chunk, and making a view, a joint and a tail per call cost as much as the
   * search itself: docs/performance.md, eighth session).
   */
  readonly #scratch: Buffer;
  #tailLen = 0;
  // While a search runs: the bytes searched (the read, or scratch), and where the chunk starts in them.
  #hay: Buffer = EMPTY;
  #base = 0;
  /**
   * The read the next occurrences below were found in: several chunks of one read (a chunked
   * body's) share one search per needle instead of one per chunk. Forgotten once the task that
   * fed the read ends (a read's bytes may be reused after that).
   */
  #seen: Uint8Array | undefined;
  #seenHay: Buffer = EMPTY;
  /** Per needle (the quoted names, then ESCAPE): its first occurrence at or after #from[k] in #seen, or -1. */
  readonly #from: number[];
  readonly #at0: number[];
  readonly #forget = () => void (this.#seen = undefined);
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
    this.#scratch = Buffer.alloc(n.keep + n.span);
    this.#from = new Array<number>(n.quoted.length + 1).fill(Number.POSITIVE_INFINITY);
    this.#at0 = new Array<number>(n.quoted.length + 1).fill(-1);
  }

  /** Forget the bytes kept from earlier reads: the next find() starts afresh at its `start`. */
  reset(): void {
    this.#tailLen = 0;
    this.lead = undefined;
  }

  /**
   * The earliest candidate in buf[start, end): its index in buf, or `start` with `lead` set when
   * it began in the bytes kept from the read before; -1 when there is none.
   */
  find(buf: Uint8Array, start: number, end: number): number {
    this.lead = undefined;
    if (buf !== this.#seen) {
      if (this.#seen === undefined) queueMicrotask(this.#forget);
      this.#seen = buf;
      this.#seenHay = buf instanceof Buffer ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.length);
      this.#from.fill(Number.POSITIVE_INFINITY); // nothing searched yet in this read
    }
    const keep = this.#keep,
      scratch = this.#scratch,
      n = end - start;
    let best = Number.POSITIVE_INFINITY;
    if (this.#tailLen > 0) {
      // Only a match that straddles the two reads: one wholly in the tail was seen before.
      const head = Math.min(n, this.#span);
      for (let k = 0; k < head; k++) scratch[keep + k] = buf[start + k]!;
      this.#hay = scratch;
      this.#base = keep;
      best = this.#search(keep - Math.min(this.#tailLen, this.#span), keep + head, keep, false, best);
      for (let k = 0; k < head; k++) scratch[keep + k] = 0;
    }
    this.#hay = this.#seenHay;
    this.#base = start;
    best = this.#search(start, end, start, true, best);
    this.#hay = EMPTY;
    // A candidate that began in the tail: its bytes from there, before the tail moves on.
    if (best < 0) this.lead = Uint8Array.prototype.slice.call(scratch, keep + best, keep);
    // Keep the last bytes (copies: the caller's read may be released once sent).
    if (n >= keep) {
      for (let k = 0; k < keep; k++) scratch[k] = buf[end - keep + k]!;
      this.#tailLen = keep;
    } else {
      const len = Math.min(keep, this.#tailLen + n);
      scratch.copyWithin(keep - len, keep - len + n, keep);
      for (let k = 0; k < n; k++) scratch[keep - n + k] = buf[start + k]!;
      this.#tailLen = len;
    }
    if (best === Number.POSITIVE_INFINITY) return -1;
    return best >= 0 ? start + best : start;
  }

  /** Whether buf[start, end) holds a candidate wholly, whatever came before (the kept bytes are untouched). */
  holds(buf: Uint8Array, start: number, end: number): boolean {
    const tailLen = this.#tailLen;
    this.#tailLen = 0;
    this.#hay = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
    this.#base = start;
    const found = this.#search(start, end, start, false, Number.POSITIVE_INFINITY) !== Number.POSITIVE_INFINITY;
    this.#hay = EMPTY;
    this.#tailLen = tailLen;
    return found;
  }

  /** Needle k's first occurrence in #hay at or after `from`; `cached`: #hay is the read #seen. */
  #next(k: number, needle: Buffer, from: number, cached: boolean): number {
    if (!cached) return this.#hay.indexOf(needle, from);
    const at = this.#at0[k]!;
    if (from >= this.#from[k]! && (at === -1 || at >= from)) return at;
    this.#from[k] = from;
    return (this.#at0[k] = this.#hay.indexOf(needle, from));
  }

  /**
   * The earliest candidate before `best` among matches in #hay[from, to) ending past `minEnd`,
   * as chunk positions (index - #base).
   */
  #search(from: number, to: number, minEnd: number, cached: boolean, best: number): number {
    const base = this.#base;
    const quoted = this.#quoted;
    for (let k = 0; k < quoted.length; k++) {
      const q = quoted[k]!;
      for (let i = this.#next(k, q, from, cached); i !== -1 && i < to && i - base < best; ) {
        if (i + q.length <= to && i + q.length > minEnd && this.#unescaped(i - base)) {
          best = i - base;
          break;
        }
        i = this.#next(k, q, i + 1, cached);
      }
    }
    const e = quoted.length;
    for (let i = this.#next(e, ESCAPE, from, cached); i !== -1 && i < to; i = this.#next(e, ESCAPE, i + 1, cached)) {
      if (i + 6 > to) break; // the next read's search sees it whole
      if (i + 6 <= minEnd || i - base - this.#maxKey >= best) continue;
      const q = this.#escapedName(i - base);
      if (q !== undefined && q < best) best = q;
    }
    return best;
  }

  /** The byte at chunk position `i`; negative positions are in the bytes kept from before. */
  #at(i: number): number | undefined {
    return i >= 0 ? this.#hay[this.#base + i] : i >= -this.#tailLen ? this.#scratch[this.#keep + i] : undefined;
  }

  /** Is the quote at `i` a real one: an even run of backslashes before it (or too long a run to tell)? */
  #unescaped(i: number): boolean {
    const low = -this.#tailLen;
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
    for (let j = i - 1; j >= Math.max(-this.#tailLen, i - this.#maxKey); j--)
      if (this.#at(j) === QUOTE && this.#unescaped(j)) return j;
    return undefined;
  }
}
