// The self-healing parts, wired once (serve.ts) and used by the /keys/query and /sync routes:
// the homeserver's view, the heal decision, detection (off with --detect off) and the audit.
import type { IncomingMessage } from "node:http";
import { type AnswerSummary, summarize } from "../delivery/keys-answer.ts";
import type { ViewParser } from "../delivery/view-parser.ts";
import type { SyncFlavour } from "../delivery/json/sync-inject.ts";
import type { BodySplice } from "../delivery/json/sync-splice.ts";
import type { ToDeviceClue } from "../delivery/to-device-clues.ts";
import { ToDeviceWatch } from "../delivery/to-device-watch.ts";
import type { Views } from "../delivery/views.ts";
import type { Requester } from "../http/auth.ts";
import type { Audit } from "./audit.ts";
import type { Detector } from "./detect.ts";
import type { Healer } from "./heal.ts";

export interface SelfHeal {
  views: Views;
  /** Reads streamed /keys/query answers off the event loop. */
  parser: ViewParser;
  healer: Healer;
  /** Undefined with --detect off. */
  detector?: Detector;
  audit?: Audit;
}

// A /keys/query answer larger than this is not read for learning (it still streams through).
const LEARN_MAX_BYTES = 32 * 1024 * 1024;

function use(h: SelfHeal, who: Requester, remote: readonly string[], summary: AnswerSummary): void {
  try {
    h.views.record(summary.views);
    h.detector?.keysQuery(who, summary, remote);
  } catch {
    // A failing store: learning waits for the next answer; the client has been served.
  }
}

/**
 * The homeserver's part of an answer the overlay has parsed already (delivery/keys-splice.ts):
 * learn from it once the client has been answered, with no second parse.
 */
export function learnParsedKeysQuery(
  h: SelfHeal,
  who: Requester,
  requested: Record<string, string[]>,
  remote: readonly string[],
  homeserver: Record<string, unknown>,
): void {
  const learned = new Promise<void>((done) =>
    setImmediate(() => {
      use(h, who, remote, summarize(homeserver, requested, remote, Date.now()));
      done();
    }),
  );
  h.views.learning(remote, learned);
}

/**
 * A /keys/query answer streaming to the client unchanged: its chunks are kept by reference and
 * read once it has all gone out, in the reading thread (delivery/view-parser.ts), so neither
 * this client nor any other waits for the parse.
 */
export function watchKeysQuery(
  h: SelfHeal,
  up: IncomingMessage,
  who: Requester,
  requested: Record<string, string[]>,
  remote: readonly string[],
): void {
  if (up.statusCode !== 200 || up.headers["content-encoding"]) return;
  // Known from the first byte the client may see until the answer has been learned from.
  let learned!: (p: Promise<void>) => void;
  h.views.learning(remote, new Promise<void>((r) => (learned = r)));
  for (const ev of ["close", "error", "aborted"]) up.on(ev, () => learned(Promise.resolve())); // ended early: nothing to learn
  let chunks: Buffer[] | undefined = [];
  let size = 0;
  up.on("data", (c: Buffer) => {
    if (!chunks) return;
    size += c.length;
    if (size > LEARN_MAX_BYTES) chunks = undefined;
    else chunks.push(c);
  });
  up.on("end", () => {
    const held = chunks;
    chunks = undefined;
    learned(held ? read(h, who, requested, remote, held) : Promise.resolve());
  });
}

/**
 * Learn from the homeserver's answer (its bytes, before any overlay of ours) once the client
 * has been answered: read in the reading thread (delivery/view-parser.ts), so neither this
 * client nor any other waits for the parse.
 */
export function learnKeysQuery(
  h: SelfHeal,
  who: Requester,
  requested: Record<string, string[]>,
  remote: readonly string[],
  chunks: readonly Uint8Array[],
): void {
  h.views.learning(remote, read(h, who, requested, remote, chunks));
}

/** learnKeysQuery's reading: settles once what the answer teaches is recorded. */
function read(
  h: SelfHeal,
  who: Requester,
  requested: Record<string, string[]>,
  remote: readonly string[],
  chunks: readonly Uint8Array[],
): Promise<void> {
  let size = 0;
  for (const c of chunks) size += c.length;
  if (size > LEARN_MAX_BYTES) return Promise.resolve();
  return new Promise<void>((r) => setImmediate(r)).then(() => {
    const at = Date.now();
    return h.parser.summarize(chunks, requested, [...remote]).then(
      async (summary) => {
        // A repeat of the last answer teaches nothing, but it is the homeserver's answer as of
        // now: a change it reported before this is no longer ahead of our record.
        if (summary === "same") await h.views.seen(remote, at).catch(() => {});
        else if (summary) use(h, who, remote, summary);
      },
      () => {},
    );
  });
}

/** To-device clues a device received in its /sync body. */
export function onToDevice(h: SelfHeal | undefined, who: Requester, clues: ToDeviceClue[]): void {
  if (!h?.detector) return;
  void h.detector.toDevice(who, clues).catch(() => {});
}

/** A watch over a /sync body's to-device events for `who`, or undefined with --detect off. */
export function toDeviceWatch(
  h: SelfHeal | undefined,
  who: Requester,
  flavour: SyncFlavour,
): ToDeviceWatch | undefined {
  const detector = h?.detector;
  if (!detector) return undefined;
  const views = h.views;
  return new ToDeviceWatch(
    (clues) => void detector.toDevice(who, clues).catch(() => {}),
    flavour,
    (users) => views.reported(users),
  );
}

/** `splice`, with its input also read by `watch` (the bytes the homeserver sent, decoded). */
export function watchedSplice(splice: BodySplice, watch: ToDeviceWatch | undefined): BodySplice {
  if (!watch) return splice;
  return {
    feed(buf, start, end, out) {
      watch.data(buf, start, end);
      splice.feed(buf, start, end, out);
    },
    end: (out) => splice.end(out),
    settle() {
      splice.settle();
      watch.end();
    },
  };
}
