// Reads a /sync body's top-level `to_device` member (sliding sync: `extensions.to_device`) for
// detection, after the body has gone out: the client never waits for our reading. The chunks are
// kept by reference meanwhile (no copy); beyond BEHIND_BYTES they are scanned as they stream
// instead, so no more than that is held. A body that names none of the event types detection
// checks (a memchr-speed test) is not scanned at all.
import { TopLevelCapture } from "./json/json-capture.ts";
import { NameSighting } from "./json/sync-splice.ts";
import type { SyncFlavour } from "./json/sync-inject.ts";
import { cluesOf, OLM, slidingToDevice, type ToDeviceClue } from "./to-device-clues.ts";

const BEHIND_BYTES = 8 * 1024 * 1024;
// Each checked event type names one of these; `\u` escapes, which could spell them, are caught by
// NameSighting itself.
const NEEDLES = [OLM, "m.room_key_request", "m.secret.request", "m.key.verification.", "device_lists"];
const MEMBERS = { sync: ["to_device", "device_lists"], sliding: ["extensions"] } as const;

export class ToDeviceWatch {
  readonly #flavour: SyncFlavour;
  readonly #report: (clues: ToDeviceClue[]) => void;
  readonly #changed: ((users: string[]) => void) | undefined;
  readonly #sightings = NEEDLES.map((n) => new NameSighting(n));
  readonly #capture: TopLevelCapture;
  #sighted = false;
  #held: Uint8Array[] | undefined = [];
  #heldBytes = 0;

  /** `changed`: told the homeserver's own device_lists.changed, when the body has one. */
  constructor(
    report: (clues: ToDeviceClue[]) => void,
    flavour: SyncFlavour = "sync",
    changed?: (users: string[]) => void,
  ) {
    this.#report = report;
    this.#changed = changed;
    this.#flavour = flavour;
    this.#capture = new TopLevelCapture(MEMBERS[flavour]);
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
    if (!found) return;
    const member = (k: string): unknown => {
      const raw = found.get(k);
      if (!raw) return undefined;
      try {
        return JSON.parse(raw.toString("utf8"));
      } catch {
        return undefined;
      }
    };
    let toDevice: unknown, lists: unknown;
    if (this.#flavour === "sync") {
      toDevice = member("to_device");
      lists = member("device_lists");
    } else {
      const ext = member("extensions");
      toDevice = slidingToDevice(ext);
      const e2ee = isObject(ext) ? ext.e2ee : undefined;
      lists = isObject(e2ee) ? e2ee.device_lists : undefined;
    }
    const changed =
      isObject(lists) && Array.isArray(lists.changed)
        ? lists.changed.filter((u): u is string => typeof u === "string").slice(0, 10_000)
        : [];
    if (changed.length > 0) this.#changed?.(changed);
    const clues = cluesOf(toDevice);
    if (clues.length > 0) this.#report(clues);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

export interface Observer {
  data(buf: Uint8Array, start: number, end: number): void;
  end(): void;
}

/** Two observers of one body (the front end takes one). */
export function bothObservers(a: Observer | undefined, b: Observer | undefined): Observer | undefined {
  if (!a || !b) return a ?? b;
  return { data: (buf, s, e) => (a.data(buf, s, e), b.data(buf, s, e)), end: () => (a.end(), b.end()) };
}
