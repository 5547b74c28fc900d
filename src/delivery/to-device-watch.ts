// Reads a /sync body's top-level `to_device` member (sliding sync: `extensions.to_device`) for
// detection, and the homeserver's own device_lists.changed (json/read-behind.ts): the parse
// goes past a member only when it names one of the event types detection checks, or a user.
import { cluesIn } from "./to-device-scan.ts";
import { ReadBehind } from "./json/read-behind.ts";
import type { ReportedWatch } from "./json/reported-watch.ts";
import type { SyncFlavour } from "./json/sync-inject.ts";
import { cluesOf, OLM, slidingToDevice, type ToDeviceClue } from "./to-device-clues.ts";

// Each checked event type names one of these, unless spelled with `\u` escapes.
const NEEDLES = [OLM, "m.room_key_request", "m.secret.request", "m.key.verification.", "\\u"].map((n) =>
  Buffer.from(n),
);
const MEMBERS = { sync: ["to_device", "device_lists"], sliding: ["extensions"] } as const;
/** A user id starts with `@` (or its escape): a device_lists with none lists nobody. */
const USER = [Buffer.from("@"), Buffer.from("\\u")];
const names = (raw: Buffer, needles: readonly Buffer[]) => needles.some((n) => raw.indexOf(n) !== -1);
const worthReading = (key: string, raw: Buffer): boolean =>
  key === "device_lists" ? names(raw, USER) : names(raw, NEEDLES) || (key === "extensions" && names(raw, USER));

export class ToDeviceWatch {
  readonly #reader: ReadBehind;
  readonly #flavour: SyncFlavour;
  readonly #report: (clues: ToDeviceClue[]) => void;
  readonly #changed: ((users: string[]) => void) | undefined;
  #alsoChanged: ((users: string[]) => void) | undefined;

  /** `changed`: told the homeserver's own device_lists.changed, when the body has one. */
  constructor(
    report: (clues: ToDeviceClue[]) => void,
    flavour: SyncFlavour = "sync",
    changed?: (users: string[]) => void,
  ) {
    this.#report = report;
    this.#changed = changed;
    this.#flavour = flavour;
    this.#reader = new ReadBehind(MEMBERS[flavour], worthReading, (found) => this.#finish(found));
  }

  /** `changed` is told a second party too (bothObservers). */
  alsoChanged(changed: (users: string[]) => void): this {
    this.#alsoChanged = changed;
    return this;
  }

  /** True when `buf` is kept by reference (json/read-behind.ts). */
  data(buf: Uint8Array, start: number, end: number): boolean {
    return this.#reader.data(buf, start, end);
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
    let clues: ToDeviceClue[], lists: unknown;
    if (this.#flavour === "sync") {
      // Read from its bytes: parsing it would make garbage of every ciphertext (to-device-scan.ts).
      const raw = found.get("to_device");
      clues = raw ? cluesIn(raw) : [];
      lists = member("device_lists");
    } else {
      const ext = member("extensions");
      clues = cluesOf(slidingToDevice(ext));
      const e2ee = isObject(ext) ? ext.e2ee : undefined;
      lists = isObject(e2ee) ? e2ee.device_lists : undefined;
    }
    const changed =
      isObject(lists) && Array.isArray(lists.changed)
        ? lists.changed.filter((u): u is string => typeof u === "string").slice(0, 10_000)
        : [];
    if (changed.length > 0) {
      this.#changed?.(changed);
      this.#alsoChanged?.(changed);
    }
    if (clues.length > 0) this.#report(clues);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

export interface Observer {
  /** True when `buf` is kept by reference. */
  data(buf: Uint8Array, start: number, end: number): boolean;
  end(): void;
}

/**
 * The one observer of a body that both the overlays' report and detection want read (of the same
 * flavour): detection's reader reads device_lists too, so it reports to both, and the body is
 * searched and parsed once.
 */
export function bothObservers(
  reported: ReportedWatch | undefined,
  toDevice: ToDeviceWatch | undefined,
): Observer | undefined {
  if (!reported || !toDevice) return reported ?? toDevice;
  return toDevice.alsoChanged(reported.report);
}
