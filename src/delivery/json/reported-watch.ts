// The homeserver's own device_lists.changed (docs/architecture.md: a user the homeserver reports as
// changed may have a newer list there than our snapshot), read where the member is (read-behind.ts).
// Most bodies never name the member (Synapse omits it when nothing changed) and most that do
// list nobody: those are not parsed beyond it.
import { ReadBehind } from "./read-behind.ts";
import { reportedChanged, type SyncFlavour } from "./sync-inject.ts";

const MEMBER = { sync: "device_lists", sliding: "extensions" } as const;
// One array per flavour: the reader makes its search tables once per array (key-finder.ts).
const NAMES = { sync: [MEMBER.sync], sliding: [MEMBER.sliding] } as const;

export class ReportedWatch {
  readonly #reader: ReadBehind;
  /** Told the users, when the body lists some. */
  readonly report: (users: string[]) => void;

  constructor(report: (users: string[]) => void, flavour: SyncFlavour = "sync") {
    this.report = report;
    const key = MEMBER[flavour];
    this.#reader = new ReadBehind(NAMES[flavour], listsSomeone, (found) => {
      const raw = found.get(key);
      if (!raw) return;
      let lists: unknown;
      try {
        lists = JSON.parse(raw.toString("utf8"));
      } catch {
        return;
      }
      const users = reportedChanged({ [key]: lists }, flavour);
      if (users.length > 0) report(users);
    });
  }

  /** True when `buf` is kept by reference (read-behind.ts). */
  data(buf: Uint8Array, start: number, end: number): boolean {
    return this.#reader.data(buf, start, end);
  }

  end(): void {
    this.#reader.end();
  }
}

const AT = Buffer.from("@"),
  ESCAPED = Buffer.from("\\u");
/** A user id starts with `@` (or its escape): a value with neither lists nobody. */
const listsSomeone = (_key: string, raw: Buffer) => raw.indexOf(AT) !== -1 || raw.indexOf(ESCAPED) !== -1;
