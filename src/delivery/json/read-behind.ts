// Reading members of a body after it has gone out, so the client never waits for our reading.
// The chunks are kept by reference meanwhile (no copy); beyond BEHIND_BYTES they are read as
// they stream instead, so no more than that is held. A body that names none of the needles (a
// memchr-speed test) is not read at all. Used by the homeserver's own device_lists.changed
// (sync-splice.ts ReportedWatch) and by detection's to-device reading (to-device-watch.ts).
import { TopLevelCapture } from "./json-capture.ts";

const EMPTY = new Uint8Array(0);
const ESCAPE = Buffer.from("\\u");
// Reads kept for a scan behind (here and in the splice): beyond this they are scanned as they
// come, which bounds memory but puts the scan back on the client's wait.
export const BEHIND_BYTES = 8 * 1024 * 1024;

/**
 * Could bytes streaming past hold a member named `name`? Only if the name occurs in them, or a
 * \u escape that could spell it (no other escape yields its characters), including where a read
 * boundary splits either. A memchr-speed test, where finding the member itself means a scan.
 */
export class NameSighting {
  readonly #name: Buffer;
  /** The last bytes seen, where a name may have started. */
  #edge: Uint8Array = EMPTY;

  constructor(name: string) {
    this.#name = Buffer.from(name);
  }

  test(buf: Uint8Array, start: number, end: number): boolean {
    const b = Buffer.from(buf.buffer, buf.byteOffset + start, end - start);
    const span = this.#name.length - 1;
    const edge = Buffer.concat([this.#edge, b.subarray(0, span)]);
    this.#edge =
      b.length >= span
        ? Uint8Array.prototype.slice.call(b, b.length - span)
        : Buffer.concat([this.#edge, b]).subarray(-span);
    return (
      b.indexOf(this.#name) !== -1 ||
      b.indexOf(ESCAPE) !== -1 ||
      edge.indexOf(this.#name) !== -1 ||
      edge.indexOf(ESCAPE) !== -1
    );
  }
}

export class ReadBehind {
  readonly #sightings: NameSighting[];
  readonly #capture: TopLevelCapture;
  readonly #done: (found: Map<string, Buffer>) => void;
  #sighted = false;
  #held: Uint8Array[] | undefined = [];
  #heldBytes = 0;

  /** `done` gets the captured members, once, when a needle was seen and the body parsed whole. */
  constructor(members: readonly string[], needles: readonly string[], done: (found: Map<string, Buffer>) => void) {
    this.#capture = new TopLevelCapture(members);
    this.#sightings = needles.map((n) => new NameSighting(n));
    this.#done = done;
  }

  data(buf: Uint8Array, start: number, end: number): void {
    if (start >= end) return;
    if (!this.#sighted) for (const s of this.#sightings) if (s.test(buf, start, end)) this.#sighted = true;
    if (!this.#held) return this.#capture.feed(buf, start, end);
    this.#held.push(buf.subarray(start, end));
    this.#heldBytes += end - start;
    if (this.#heldBytes > BEHIND_BYTES) this.#catchUp();
  }

  end(): void {
    if (!this.#held) return this.#finish();
    if (!this.#sighted) return void (this.#held = undefined);
    setImmediate(() => {
      this.#catchUp();
      this.#finish();
    });
  }

  #catchUp(): void {
    for (const b of this.#held ?? []) this.#capture.feed(b);
    this.#held = undefined;
  }

  #finish(): void {
    if (!this.#sighted) return;
    const found = this.#capture.finish();
    if (found) this.#done(found);
  }
}
