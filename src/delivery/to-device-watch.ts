// Reads a /sync body's top-level `to_device` member (sliding sync: `extensions.to_device`) for
// detection, after the body has gone out (json/read-behind.ts): a body that names none of the event
// types detection checks is not read at all.
import { ReadBehind } from "./json/read-behind.ts";
import type { SyncFlavour } from "./json/sync-inject.ts";
import { cluesOf, OLM, slidingToDevice, type ToDeviceClue } from "./to-device-clues.ts";

// Each checked event type names one of these; `\u` escapes, which could spell them, are caught by
// the name test itself.
const NEEDLES = [OLM, "m.room_key_request", "m.secret.request", "m.key.verification.", "device_lists"];
const MEMBERS = { sync: ["to_device", "device_lists"], sliding: ["extensions"] } as const;

export class ToDeviceWatch {
  readonly #reader: ReadBehind;
  readonly #flavour: SyncFlavour;
  readonly #report: (clues: ToDeviceClue[]) => void;
  readonly #changed: ((users: string[]) => void) | undefined;

  /** `changed`: told the homeserver's own device_lists.changed, when the body has one. */
  constructor(
    report: (clues: ToDeviceClue[]) => void,
    flavour: SyncFlavour = "sync",
    changed?: (users: string[]) => void,
  ) {
    this.#report = report;
    this.#changed = changed;
    this.#flavour = flavour;
    this.#reader = new ReadBehind(MEMBERS[flavour], NEEDLES, (found) => this.#finish(found));
  }

  data(buf: Uint8Array, start: number, end: number): void {
    this.#reader.data(buf, start, end);
  }

  end(): void {
    this.#reader.end();
  }

  #finish(found: Map<string, Buffer>): void {
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
