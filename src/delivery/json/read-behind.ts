// Reading a few top-level members of a body as it streams past, for the homeserver's own
// device_lists.changed (reported-watch.ts) and detection's to-device reading
// (to-device-watch.ts). Most bodies have nothing for us, and a whole-body parse costs more than
// the relay itself (docs/performance.md, seventh session), so the parse starts only where a
// wanted member's name occurs (key-finder.ts), as if that were a top-level key: its value is read
// there, and a value with nothing in it for the reader ends the parse. Only a value worth reading
// makes the parse go on to the body's end, since only the end shows that the key was a top-level
// one: a key nested deeper closes its object before the body ends. That rest is read after the
// body has gone out, its reads kept by reference meanwhile, up to BEHIND_BYTES of them (counted
// by the buffers they keep alive); beyond that they are read as they stream. The wanted values
// are captured by reference (json-capture.ts byReference): a read holding one is kept too, at
// most twice the value's size (MAX_VALUE), beyond that count.
import { type CaptureEvents, TopLevelCapture } from "./json-capture.ts";
import { KeyFinder } from "./key-finder.ts";

const OPEN = Uint8Array.of(0x7b);
/** A wanted value longer than this is not read (it cannot be a client's normal traffic). */
const MAX_VALUE = 4 * 1024 * 1024;
const SLICE = 4096;
// Reads kept for a scan behind (here and in the splice): beyond this they are scanned as they
// come, which bounds memory but puts the scan back on the client's wait.
export const BEHIND_BYTES = 8 * 1024 * 1024;

export class ReadBehind implements CaptureEvents {
  readonly #members: readonly string[];
  readonly #interesting: (key: string, raw: Buffer) => boolean;
  readonly #done: (found: Map<string, Buffer>) => void;
  // Made on the first read: a held long-poll has no body yet (docs/performance.md, idle long-polls).
  #finder: KeyFinder | undefined;
  /** The parse from a candidate key, as if it were a top-level one; undefined between candidates. */
  #parse: TopLevelCapture | undefined;
  /** Its first value is worth reading: it goes on to the end of the body. */
  #keen = false;
  #held: Uint8Array[] | undefined;
  #heldBytes = 0;
  #lastHeld: ArrayBufferLike | undefined;
  /** Past BEHIND_BYTES: the rest is read as it comes. */
  #over = false;
  // Where, in the read being parsed, the parse found its value not worth reading, or its object closed.
  #dullAt = -1;
  #closedAt = -1;

  /**
   * `members`: the top-level members to read; `interesting`: is a member's value (raw JSON) worth
   * reading; `done` gets the members' values, once, when one was and the body is one JSON object.
   */
  constructor(
    members: readonly string[],
    interesting: (key: string, raw: Buffer) => boolean,
    done: (found: Map<string, Buffer>) => void,
  ) {
    this.#members = members;
    this.#interesting = interesting;
    this.#done = done;
  }

  /** True when `buf` is kept by reference (it must not be released or reused). */
  data(buf: Uint8Array, start: number, end: number): boolean {
    if (start >= end) return false;
    if (this.#keen && !this.#over) return this.#hold(buf, start, end);
    return this.#run(buf, start, end);
  }

  end(): void {
    if (this.#held)
      return void setImmediate(() => {
        this.#catchUp();
        this.#finish();
      });
    this.#finish();
  }

  valueStart(): void {}

  valueEnd(key: string, at: number): void {
    if (this.#keen || this.#dullAt >= 0) return;
    const raw = this.#parse?.value(key);
    if (raw !== undefined && this.#interesting(key, raw)) this.#keen = true;
    else this.#dullAt = at;
  }

  closed(at: number): void {
    if (this.#closedAt < 0) this.#closedAt = at;
  }

  #hold(buf: Uint8Array, start: number, end: number): boolean {
    (this.#held ??= []).push(buf.subarray(start, end));
    // A view keeps its whole read alive: count that.
    if (buf.buffer !== this.#lastHeld) this.#heldBytes += buf.buffer.byteLength;
    this.#lastHeld = buf.buffer;
    if (this.#heldBytes <= BEHIND_BYTES) return true;
    this.#over = true;
    // The read in hand is the last one caught up: it is kept if the parse keeps views of it.
    return this.#catchUp();
  }

  /**
   * Parse buf[start, end): find candidates, and read from each until it is ruled out. True when
   * the parse keeps views of buf: the wanted values are captured by reference, not copied (a
   * copy of a to_device member, and the joining of its copies, were most of the garbage each
   * /sync body made: docs/performance.md, eighth session).
   */
  #run(buf: Uint8Array, start: number, end: number): boolean {
    while (start < end) {
      let parse = this.#parse;
      let floor = start;
      if (!parse) {
        const f = (this.#finder ??= new KeyFinder(this.#members));
        const at = f.find(buf, start, end);
        if (at < 0) return false;
        parse = this.#parse = new TopLevelCapture(this.#members, MAX_VALUE, this, true);
        this.#keen = false;
        parse.feed(OPEN);
        if (f.lead) parse.feed(f.lead);
        start = at;
        floor = f.lead ? at : at + 1;
      }
      this.#dullAt = this.#closedAt = -1;
      // Until its first value is found worth reading, in slices: a read can be half a megabyte,
      // and a value found dull (or a key found nested) ends the parse within a slice of it.
      for (let from = start; from < end; ) {
        const to = this.#keen ? end : Math.min(end, from + SLICE);
        parse.feed(buf, from, to);
        from = to;
        if (this.#dullAt >= 0 || parse.failed) break;
      }
      if (this.#dullAt >= 0) start = this.#dullAt;
      else if (parse.failed) start = this.#closedAt >= 0 ? this.#closedAt + 1 : floor;
      else return parse.viewsOf(buf.buffer);
      // Ruled out: look for the next candidate from there.
      this.#parse = undefined;
      this.#keen = false;
      this.#finder!.reset();
    }
    return false;
  }

  /** True when the parse keeps views of the held reads (of the last one, say). */
  #catchUp(): boolean {
    const held = this.#held ?? [];
    this.#held = undefined;
    this.#heldBytes = 0;
    this.#lastHeld = undefined;
    let kept = false;
    for (const b of held) kept = this.#run(b, 0, b.length) || kept;
    return kept;
  }

  #finish(): void {
    const parse = this.#parse;
    if (!parse || !this.#keen) return;
    const found = parse.finish();
    if (found) this.#done(found);
  }
}
