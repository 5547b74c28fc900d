// /sync injection while the body streams: the bytes go on to the client as they arrive, and
// only the member that holds device_lists is held back, parsed and re-encoded. When the body
// has no such member (Synapse leaves it out when nothing changed), one is added just before
// the closing brace. Holding the whole body first cost the client +3 to +5 ms on 1 MB
// (docs/performance.md, delivery).
import { type CaptureEvents, TopLevelCapture } from "./json-capture.ts";
import { injectChanged, reportedChanged, type SyncFlavour } from "./sync-inject.ts";

/** Receives the output bytes buf[start, end): a view, to be copied or sent before it returns. */
export type Emit = (buf: Uint8Array, start: number, end: number) => void;

export interface Spliced {
  /** Users now in `changed` (added, or already there). */
  added: string[];
  /** The homeserver's own `changed`, before we touched it. */
  reported: string[];
  /** next_batch (sync) or pos (sliding sync). */
  token: string | undefined;
}

/** A body rewritten as it streams (front/response.ts, routes/sync.ts). */
export interface BodySplice {
  /** Passes buf[start, end) of the body on to `out`, rewritten where it needs to be. */
  feed(buf: Uint8Array, start: number, end: number, out: Emit): void;
  /** The whole body went through: anything still held goes to `out`. */
  end(out: Emit): void;
}

const MEMBER = { sync: "device_lists", sliding: "extensions" } as const;
const TOKEN = { sync: "next_batch", sliding: "pos" } as const;
const EMPTY = new Uint8Array(0);

export class SyncSplice implements BodySplice, CaptureEvents {
  readonly #users: readonly string[];
  readonly #done: (s: Spliced) => void;
  readonly #flavour: SyncFlavour;
  readonly #member: string;
  readonly #capture: TopLevelCapture;
  #added: string[] = [];
  #reported: string[] = [];
  #seen = false;
  // The chunk being fed, the next byte of it not yet emitted, and the held member's bytes.
  #buf: Uint8Array = EMPTY;
  #from = 0;
  #out: Emit = () => {};
  #held: Uint8Array[] | undefined;
  #holdFrom = 0;

  /** `done`: called at the end when the body was one JSON object (else nothing changed). */
  constructor(users: readonly string[], flavour: SyncFlavour, done: (s: Spliced) => void) {
    this.#users = users;
    this.#done = done;
    this.#flavour = flavour;
    this.#member = MEMBER[flavour];
    this.#capture = new TopLevelCapture([this.#member, TOKEN[flavour]], 4 * 1024 * 1024, this);
  }

  feed(buf: Uint8Array, start: number, end: number, out: Emit): void {
    if (this.#capture.failed) return out(buf, start, end);
    this.#buf = buf;
    this.#from = start;
    this.#holdFrom = start;
    this.#out = out;
    this.#capture.feed(buf, start, end);
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

  end(out: Emit): void {
    // Cut short inside the member: it goes out as it came, and the body is not one object.
    for (const b of this.#held ?? []) out(b, 0, b.length);
    this.#held = undefined;
    const found = this.#capture.finish();
    if (!found) return;
    const raw = found.get(TOKEN[this.#flavour]);
    let token: unknown;
    try {
      token = raw && JSON.parse(raw.toString("utf8"));
    } catch {
      token = undefined;
    }
    this.#done({ added: this.#added, reported: this.#reported, token: typeof token === "string" ? token : undefined });
  }

  valueStart(key: string, at: number): void {
    if (key !== this.#member) return;
    this.#emit(this.#buf, this.#from, at);
    this.#held = [];
    this.#holdFrom = at;
  }

  valueEnd(key: string, at: number): void {
    if (key !== this.#member || !this.#held) return;
    this.#held.push(this.#buf.subarray(this.#holdFrom, at));
    const original = Buffer.concat(this.#held);
    this.#held = undefined;
    this.#from = at;
    this.#seen = true;
    const value = this.#rewritten(original);
    if (value === undefined) this.#emit(original, 0, original.length);
    else this.#emitText(value);
  }

  closed(at: number, empty: boolean): void {
    if (this.#seen) return;
    const value = this.#rewritten(undefined);
    if (value === undefined) return;
    this.#emit(this.#buf, this.#from, at);
    this.#from = at;
    this.#emitText(`${empty ? "" : ","}${JSON.stringify(this.#member)}:${value}`);
  }

  /** The member's new JSON text, or undefined when it stays as the homeserver sent it. */
  #rewritten(original: Buffer | undefined): string | undefined {
    let value: unknown;
    if (original !== undefined) {
      try {
        value = JSON.parse(original.toString("utf8"));
      } catch {
        return undefined; // only a bad escape gets past the grammar: JSON.parse of the body fails too
      }
    }
    const key = this.#member;
    const shell: Record<string, unknown> = value === undefined ? {} : { [key]: value };
    // The last occurrence of a duplicated member is the one clients read (JSON.parse keeps it).
    this.#reported = reportedChanged(shell, this.#flavour);
    const before = JSON.stringify(shell[key]);
    this.#added = injectChanged(shell, this.#users, this.#flavour);
    const after = JSON.stringify(shell[key]);
    return after === before ? undefined : after;
  }

  #emit(buf: Uint8Array, start: number, end: number): void {
    if (end > start) this.#out(buf, start, end);
  }

  #emitText(text: string): void {
    const bytes = Buffer.from(text);
    this.#out(bytes, 0, bytes.length);
  }
}

// The homeserver's own device_lists.changed (DESIGN.md: a user the homeserver reports as
// changed may have a newer list there than our snapshot), read once the body has gone out, so
// the client never waits for our reading. The chunks are kept by reference meanwhile (no
// copy); a body beyond HOLD_BYTES is read as it streams instead, so no more than that is held.
const HOLD_BYTES = 2 * 1024 * 1024;

export class ReportedWatch {
  readonly #capture: TopLevelCapture;
  readonly #flavour: SyncFlavour;
  readonly #report: (users: string[]) => void;
  #held: Buffer[] | undefined = [];
  #heldBytes = 0;

  constructor(report: (users: string[]) => void, flavour: SyncFlavour = "sync") {
    this.#report = report;
    this.#flavour = flavour;
    this.#capture = new TopLevelCapture([MEMBER[flavour]]);
  }

  data(buf: Buffer, start: number, end: number): void {
    if (!this.#held) return this.#capture.feed(buf, start, end);
    this.#held.push(buf.subarray(start, end));
    this.#heldBytes += end - start;
    if (this.#heldBytes > HOLD_BYTES) this.#catchUp();
  }

  end(): void {
    if (!this.#held) return this.#finish();
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
    const key = MEMBER[this.#flavour];
    const raw = this.#capture.finish()?.get(key);
    if (!raw) return;
    let lists: unknown;
    try {
      lists = JSON.parse(raw.toString("utf8"));
    } catch {
      return;
    }
    const users = reportedChanged({ [key]: lists }, this.#flavour);
    if (users.length > 0) this.#report(users);
  }
}
