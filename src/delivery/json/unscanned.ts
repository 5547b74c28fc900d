// The reads a /sync splice (sync-splice.ts) sent on before scanning them: kept by reference for
// the scan behind, with the body's trailing `}` held back while the member may still have to go
// in just before it, and what the object's first bytes say about the comma that member needs.
import type { Emit } from "./sync-splice.ts";

const CLOSE_OBJ = 0x7d,
  OPEN_OBJ = 0x7b;
const isSpace = (b: number | undefined) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;

export class Unscanned {
  /** Reads sent but not yet scanned, in order (views: the reads are never reused). */
  reads: Uint8Array[] = [];
  bytes = 0;
  /** The kept-back `}` and any whitespace after it (a copy). */
  #tail: Uint8Array | undefined;
  /** Non-whitespace so far: 0 none; 1 `{`; 2 `{}` (an empty object, if that is all); 3 more. */
  #opened = 0;

  /** The body so far is `{` and whitespace, then `}`: an added member needs no comma before it. */
  get empty(): boolean {
    return this.#opened === 2;
  }

  get holdsTail(): boolean {
    return this.#tail !== undefined;
  }

  /** Whether the object has anything in it, from its first bytes (for the comma before ours). */
  notePrefix(buf: Uint8Array, start: number, end: number): void {
    for (let i = start; i < end && this.#opened < 3; i++) {
      const b = buf[i];
      if (isSpace(b)) continue;
      if (this.#opened === 0) this.#opened = b === OPEN_OBJ ? 1 : 3;
      else this.#opened = this.#opened === 1 && b === CLOSE_OBJ ? 2 : 3;
    }
  }

  /**
   * buf[start, end) goes out before its scan; with `keepBrace`, a last byte (bar whitespace)
   * that is a `}` stays back (it may close the body, and the member may have to go in before it).
   */
  pass(buf: Uint8Array, start: number, end: number, out: Emit, keepBrace: boolean): void {
    this.reads.push(buf.subarray(start, end));
    this.bytes += end - start;
    if (!keepBrace) return out(buf, start, end);
    let last = end - 1;
    while (last >= start && isSpace(buf[last])) last--;
    if (last < start) {
      // Whitespace only: after a kept-back `}` it stays with it.
      if (this.#tail) this.#tail = Buffer.concat([this.#tail, buf.subarray(start, end)]);
      else out(buf, start, end);
      return;
    }
    this.flushTail(out);
    if (buf[last] === CLOSE_OBJ) {
      if (last > start) out(buf, start, last);
      this.#tail = Uint8Array.prototype.slice.call(buf, last, end);
    } else out(buf, start, end);
  }

  /** The reads kept so far, handed over for their scan and forgotten here. */
  take(): Uint8Array[] {
    const reads = this.reads;
    this.reads = [];
    this.bytes = 0;
    return reads;
  }

  flushTail(out: Emit): void {
    const tail = this.takeTail();
    if (tail) out(tail, 0, tail.length);
  }

  takeTail(): Uint8Array | undefined {
    const tail = this.#tail;
    this.#tail = undefined;
    return tail;
  }
}
