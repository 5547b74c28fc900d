// Reads a /sync body's top-level `to_device` member (sliding sync: `extensions.to_device`) for
// detection, after the body has gone out: the client never waits for our reading. The chunks are
// kept by reference meanwhile (no copy); beyond BEHIND_BYTES they are scanned as they stream
// instead, so no more than that is held. A body that names none of the event types detection
// checks (a memchr-speed test) is not scanned at all.
import { TopLevelCapture } from "./json-capture.ts";
import { NameSighting } from "./sync-splice.ts";
import type { SyncFlavour } from "./sync-inject.ts";
import { cluesOf, OLM, slidingToDevice, type ToDeviceClue } from "./to-device-clues.ts";

const BEHIND_BYTES = 8 * 1024 * 1024;
// Each checked event type names one of these; `\u` escapes, which could spell them, are caught by
// NameSighting itself.
const NEEDLES = [OLM, "m.room_key_request", "m.secret.request", "m.key.verification."];
const MEMBER = { sync: "to_device", sliding: "extensions" } as const;

export class ToDeviceWatch {
  readonly #flavour: SyncFlavour;
  readonly #report: (clues: ToDeviceClue[]) => void;
  readonly #sightings = NEEDLES.map((n) => new NameSighting(n));
  readonly #capture: TopLevelCapture;
  #sighted = false;
  #held: Uint8Array[] | undefined = [];
  #heldBytes = 0;

  constructor(report: (clues: ToDeviceClue[]) => void, flavour: SyncFlavour = "sync") {
    this.#report = report;
    this.#flavour = flavour;
    this.#capture = new TopLevelCapture([MEMBER[flavour]]);
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
    const raw = this.#capture.finish()?.get(MEMBER[this.#flavour]);
    if (!raw) return;
    let value: unknown;
    try {
      value = JSON.parse(raw.toString("utf8"));
    } catch {
      return;
    }
    const clues = cluesOf(this.#flavour === "sync" ? value : slidingToDevice(value));
    if (clues.length > 0) this.#report(clues);
  }
}

export interface Observer {
  data(buf: Uint8Array, start: number, end: number): void;
  end(): void;
}

/** Two observers of one body (the front end takes one). */
export function bothObservers(a: Observer | undefined, b: Observer | undefined): Observer | undefined {
  if (!a || !b) return a ?? b;
  return { data: (buf, s, e) => (a.data(buf, s, e), b.data(buf, s, e)), end: () => (a.end(), b.end()) };
}
