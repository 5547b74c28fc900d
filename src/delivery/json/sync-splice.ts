// /sync injection while the body streams: the bytes go on to the client as they arrive, and
// only the member that holds device_lists is held back, parsed and re-encoded. When the body
// has no such member (Synapse leaves it out when nothing changed), one is added just before
// the closing brace.
//
// Finding the member means scanning the JSON (json-capture.ts, ~1 ms per MB), and scanning
// ahead of every send put that on the client's wait. A read that cannot hold the member goes
// out first and is scanned afterwards ("behind"): it cannot if neither the member's name nor a
// \u escape that could spell it occurs in it (key-finder.ts, memchr speed). Only a read that may
// hold it is scanned ahead. The closing brace needs no scan: in a well-formed body it is the
// last byte that is not whitespace, so a read ending in `}` keeps that byte back until more
// comes or the body ends. After the last send, the scan behind goes as far as the token, which
// the report of what the answer carried needs (docs/performance.md, delivery). Past the splice
// point (the member and the token gone out) the rest is not looked at (#afterRead).
import { type CaptureEvents, TopLevelCapture } from "./json-capture.ts";
import { KeyFinder } from "./key-finder.ts";
import { BEHIND_BYTES } from "./read-behind.ts";
import { rewriteMember, type SyncFlavour } from "./sync-inject.ts";
import { Unscanned } from "./unscanned.ts";

const EMPTY = new Uint8Array(0);

/** Receives the output bytes buf[start, end): a view, to be copied or sent before it returns. */
export type Emit = (buf: Uint8Array, start: number, end: number) => void;

export interface Spliced {
  /** Users now in `changed` (added, or already there). */
  added: string[];
  /** The homeserver's own `changed`, before we touched it. */
  reported: string[];
  /** next_batch (sync) or pos (sliding sync): as it went out (ours, when the splice wraps it). */
  token: string | undefined;
}

/**
 * A body rewritten as it streams (engine/bun/response.ts, routes/sync.ts). Buffers passed to feed()
 * may be kept by reference until settle(): they must not be reused meanwhile (socket reads and
 * node stream chunks never are).
 */
export interface BodySplice {
  /** Passes buf[start, end) of the body on to `out`, rewritten where it needs to be. */
  feed(buf: Uint8Array, start: number, end: number, out: Emit): void;
  /** The whole body went through: anything still held goes to `out`. */
  end(out: Emit): void;
  /** After the output has been sent: finish reading the body, and report what it carried. */
  settle(): void;
}

const MEMBER = { sync: "device_lists", sliding: "extensions" } as const;
/** A JSON string's value from its raw bytes; undefined for anything else. */
function stringOf(raw: Uint8Array | undefined): string | undefined {
  if (!raw) return undefined;
  try {
    const v: unknown = JSON.parse(Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString("utf8"));
    return typeof v === "string" ? v : undefined;
  } catch {
    return undefined;
  }
}
const TOKEN = { sync: "next_batch", sliding: "pos" } as const;
// The lists of names, one array each: finders and captures make their tables once per array.
const ALONE = { sync: [MEMBER.sync], sliding: [MEMBER.sliding] } as const;
const BOTH = { sync: [MEMBER.sync, TOKEN.sync], sliding: [MEMBER.sliding, TOKEN.sliding] } as const;
// At the end, this much is still scanned before the closing brace goes out.
const SCAN_AT_END = 64 * 1024;
const SLICE = 4096;
/** More than a key finder keeps of a read for the next (key-finder.ts: 6 bytes a character, and some). */
const PRIME = 256;

export class SyncSplice implements BodySplice, CaptureEvents {
  readonly #users: readonly string[];
  readonly #done: (s: Spliced) => void;
  readonly #flavour: SyncFlavour;
  readonly #member: string;
  /** Where the member's name, or the token's when it is rewritten, may occur as a key. */
  #sighting: KeyFinder;
  #narrowed = false;
  /** Past the splice point: the rest of the body goes out unread (#afterRead). */
  #past = false;
  readonly #capture: TopLevelCapture;
  /** Gives the token the client gets instead of the homeserver's (tokens.ts), when set. */
  readonly #wrap: ((token: string) => string) | undefined;
  readonly #tokenKey: string;
  /** Which member's value is held: the device lists', or the token's. */
  #holding: string | undefined;
  /** The token as it went out, when it was rewritten; a token that passed unrewritten carried nothing. */
  #wrapped: string | undefined;
  #tokenMissed = false;
  #added: string[] = [];
  #reported: string[] = [];
  /** The member went out, rewritten or added: nothing is left to change. */
  #seen = false;
  /** A member's value passed during a scan behind: it went out unchanged, so nothing is reported. */
  #missed = false;
  // Scan ahead: the read being fed, its next byte not yet emitted, and the held member's bytes.
  #buf: Uint8Array = EMPTY;
  #from = 0;
  #out: Emit = () => {};
  #held: Uint8Array[] | undefined;
  #holdFrom = 0;
  // Scan behind: reads sent but not yet scanned, and the trailing `}` (and whitespace) kept back.
  readonly #sent = new Unscanned();
  #muted = false;

  /**
   * `done`: called by settle() unless what was read of the body shows it is not one JSON object.
   * `wrap`: the token member is rewritten too (a position of ours, tokens.ts), and `done` gets
   * the rewritten one; a body whose token could not be rewritten is not reported.
   */
  constructor(
    users: readonly string[],
    flavour: SyncFlavour,
    done: (s: Spliced) => void,
    wrap?: (token: string) => string,
  ) {
    this.#users = users;
    this.#done = done;
    this.#flavour = flavour;
    this.#member = MEMBER[flavour];
    this.#wrap = wrap;
    this.#tokenKey = TOKEN[flavour];
    this.#sighting = new KeyFinder(wrap ? BOTH[flavour] : ALONE[flavour]);
    this.#capture = new TopLevelCapture(BOTH[flavour], 4 * 1024 * 1024, this);
  }

  feed(buf: Uint8Array, start: number, end: number, out: Emit): void {
    if (start >= end) return;
    this.#sent.notePrefix(buf, start, end);
    // Past the splice point the rest goes out as it comes, unread (#afterRead).
    if (this.#past) return out(buf, start, end);
    // The test runs on every read: it keeps the read's last bytes for the next one.
    const mayHold = this.#sighting.find(buf, start, end) !== -1;
    this.#route(buf, start, end, out, mayHold);
    this.#afterRead(buf, start, end);
  }

  /**
   * Past the splice point, the member gone out and the token settled, nothing more is looked for:
   * a homeserver names each top-level member once (a second `device_lists` after that point would
   * go out as it came), and any look-alike further on is inside some other member. Once only the
   * token is settled, only the member's name is looked for (one search of every byte less).
   */
  #afterRead(buf: Uint8Array, start: number, end: number): void {
    if (!this.#tokenSettled()) return;
    if (this.#seen) this.#past = true;
    else if (this.#wrap && !this.#narrowed && end - start >= PRIME) {
      // Primed with this read's last bytes: a name cut by the next read boundary is still found.
      this.#sighting = new KeyFinder(ALONE[this.#flavour]);
      this.#sighting.find(buf, end - PRIME, end);
      this.#narrowed = true;
    }
  }

  #tokenSettled(): boolean {
    const c = this.#capture;
    if (this.#held || c.failed) return false;
    return this.#wrap ? this.#wrapped !== undefined : c.value(this.#tokenKey) !== undefined;
  }

  #route(buf: Uint8Array, start: number, end: number, out: Emit, mayHold: boolean): void {
    if (this.#capture.failed) {
      this.#sent.flushTail(out);
      return out(buf, start, end);
    }
    // Behind only when the member is not being held, nor coming: its name read ahead, or a key
    // open that may be it. The capture's state may lag by reads sent behind, but those cannot
    // change any of this.
    const c = this.#capture;
    const awaited = c.awaiting === this.#member || (this.#wrap !== undefined && c.awaiting === this.#tokenKey);
    if (!mayHold && !this.#held && !awaited && !c.inKey) return this.#passBehind(buf, start, end, out);
    this.#catchUp();
    this.#sent.flushTail(out);
    this.#scanAhead(buf, start, end, out);
  }

  end(out: Emit): void {
    // Cut short inside the member: it goes out as it came, and the body is not one object.
    for (const b of this.#held ?? []) out(b, 0, b.length);
    this.#held = undefined;
    const tail = this.#sent.takeTail();
    if (!tail) return;
    // The body's last byte that is not whitespace is a `}`: the object's own, if the body is
    // well-formed. No member was seen, so it goes in just before. Whether the body is indeed
    // well-formed is known now when little is left to scan, else only to settle(): a body that
    // is not gets the member too, and then it is not reported (its client cannot parse it anyway).
    if (this.#sent.bytes <= SCAN_AT_END) this.#catchUp();
    const value = this.#seen || this.#capture.failed ? undefined : this.#rewritten(undefined);
    if (value !== undefined)
      this.#emitText(out, `${this.#sent.empty ? "" : ","}${JSON.stringify(this.#member)}:${value}`);
    out(tail, 0, tail.length);
  }

  settle(): void {
    // What went out behind is read only as far as the token: the rest cannot hold the member
    // (the sighting test), and only a body's token says which request acknowledges it. A body
    // that would have failed to parse further on is reported all the same, harmlessly: its client
    // cannot read the token, asks again from its old position, and the delivery is carried again.
    const key = TOKEN[this.#flavour];
    this.#muted = true;
    const behind = this.#sent.take();
    let read = 0;
    for (; read < behind.length && this.#capture.value(key) === undefined; read++) this.#capture.feed(behind[read]!);
    this.#muted = false;
    if (read === behind.length && !this.#past) this.#capture.finish();
    if (this.#capture.failed || this.#missed) return;
    if (this.#wrap) {
      if (this.#tokenMissed) return;
      return this.#done({ added: this.#added, reported: this.#reported, token: this.#wrapped });
    }
    const token = stringOf(this.#capture.value(key));
    this.#done({ added: this.#added, reported: this.#reported, token });
  }

  valueStart(key: string, at: number): void {
    const token = key === this.#tokenKey && key !== this.#member;
    if (!token && key !== this.#member) return;
    if (token && !this.#wrap) return;
    // Ruled out by the sighting tests; a token that went out as it came carried nothing.
    if (this.#muted) return void (token ? (this.#tokenMissed = true) : (this.#missed = true));
    this.#emit(this.#buf, this.#from, at);
    this.#held = [];
    this.#holding = key;
    this.#holdFrom = at;
  }

  valueEnd(key: string, at: number): void {
    if (key !== this.#holding || !this.#held) return;
    this.#held.push(this.#buf.subarray(this.#holdFrom, at));
    const original = Buffer.concat(this.#held);
    this.#held = undefined;
    this.#holding = undefined;
    this.#from = at;
    if (key !== this.#member) {
      const token = stringOf(original);
      if (token === undefined) return this.#emit(original, 0, original.length);
      this.#wrapped = this.#wrap!(token);
      return this.#emitText(this.#out, JSON.stringify(this.#wrapped));
    }
    this.#seen = true;
    const value = this.#rewritten(original);
    if (value === undefined) this.#emit(original, 0, original.length);
    else this.#emitText(this.#out, value);
  }

  closed(at: number, empty: boolean): void {
    // Behind, the kept-back `}` stands for it (end()).
    if (this.#seen || this.#muted) return;
    const value = this.#rewritten(undefined);
    if (value === undefined) return;
    this.#emit(this.#buf, this.#from, at);
    this.#from = at;
    this.#seen = true;
    this.#emitText(this.#out, `${empty ? "" : ","}${JSON.stringify(this.#member)}:${value}`);
  }

  #passBehind(buf: Uint8Array, start: number, end: number, out: Emit): void {
    this.#sent.pass(buf, start, end, out, !this.#seen);
    if (this.#sent.bytes > BEHIND_BYTES) this.#catchUp();
  }

  /** Scan what went out behind, with the events muted: they concern bytes already sent. */
  #catchUp(): void {
    if (this.#sent.reads.length === 0) return;
    this.#muted = true;
    for (const b of this.#sent.take()) this.#capture.feed(b);
    this.#muted = false;
  }

  #scanAhead(buf: Uint8Array, start: number, end: number, out: Emit): void {
    this.#buf = buf;
    this.#from = start;
    this.#holdFrom = start;
    this.#out = out;
    // In slices: once nothing is held or awaited and the rest of the read cannot hold a member,
    // the rest goes out before its scan, like a read that never could (a read can be half a
    // megabyte, and the token is usually in its first bytes).
    for (let from = start; from < end; ) {
      const to = Math.min(end, from + SLICE);
      this.#capture.feed(buf, from, to);
      from = to;
      if (to === end || this.#capture.failed || this.#held) continue;
      if (this.#seen && this.#tokenSettled()) {
        this.#emit(buf, this.#from, end);
        this.#buf = EMPTY;
        this.#past = true;
        return;
      }
      const c = this.#capture;
      if (c.awaiting !== undefined || c.inKey || this.#sighting.holds(buf, to, end)) continue;
      this.#emit(buf, this.#from, to);
      this.#buf = EMPTY;
      return this.#passBehind(buf, to, end, out);
    }
    if (this.#capture.failed) {
      // Not a JSON object after all: what is held goes out as it came, and so does the rest.
      const rest = this.#held ? this.#holdFrom : this.#from;
      for (const b of this.#held ?? []) out(b, 0, b.length);
      this.#held = undefined;
      this.#emit(buf, rest, end);
    } else if (this.#held) this.#held.push(new Uint8Array(buf.subarray(this.#holdFrom, end)));
    else this.#emit(buf, this.#from, end);
    this.#buf = EMPTY;
  }

  /** The member's new JSON text, or undefined when it stays as the homeserver sent it. */
  #rewritten(original: Buffer | undefined): string | undefined {
    const r = rewriteMember(original, this.#users, this.#flavour);
    if (!r) return undefined;
    this.#reported = r.reported;
    this.#added = r.added;
    return r.value;
  }

  #emit(buf: Uint8Array, start: number, end: number): void {
    if (end > start) this.#out(buf, start, end);
  }

  #emitText(out: Emit, text: string): void {
    const bytes = Buffer.from(text);
    out(bytes, 0, bytes.length);
  }
}
