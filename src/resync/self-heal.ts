// The self-healing parts, wired once (serve.ts) and used by the /keys/query and /sync routes:
// the homeserver's view, the heal decision, detection (off with --detect off) and the audit.
import { createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { LRUCache } from "lru-cache";
import type { SyncFlavour } from "../delivery/sync-inject.ts";
import type { BodySplice } from "../delivery/sync-splice.ts";
import type { ToDeviceClue } from "../delivery/to-device-clues.ts";
import { ToDeviceWatch } from "../delivery/to-device-watch.ts";
import type { Views } from "../delivery/views.ts";
import type { Requester } from "../server/auth.ts";
import type { Audit } from "./audit.ts";
import type { Detector } from "./detect.ts";
import type { Healer } from "./heal.ts";

export interface SelfHeal {
  views: Views;
  healer: Healer;
  /** Undefined with --detect off. */
  detector?: Detector;
  audit?: Audit;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

// A /keys/query answer larger than this is not read for learning (it still streams through).
const LEARN_MAX_BYTES = 32 * 1024 * 1024;

/**
 * The parts of a /keys/query answer learning reads, copied shallowly before an overlay replaces
 * entries (the overlay puts new objects in; it does not change the homeserver's).
 */
export function answerParts(answer: Json): Json {
  const copy = (k: string) => (isObject(answer[k]) ? { ...(answer[k] as Json) } : undefined);
  return { device_keys: copy("device_keys"), master_keys: copy("master_keys"), self_signing_keys: copy("self_signing_keys"), failures: copy("failures") };
}

/** Learn the homeserver's view from its answer and look for signals in it; after the client has it. */
export function afterKeysQuery(h: SelfHeal, who: Requester, requested: Record<string, string[]>, remote: readonly string[], answer: Json): void {
  setImmediate(() => {
    try {
      h.views.learn(answer, requested, remote);
      h.detector?.keysQuery(who, answer, remote);
    } catch {
      // A failing store: learning waits for the next answer; the client has been served.
    }
  });
}

// The last answer's digest per set of users queried: clients repeat the same query, and the same
// bytes teach nothing new. A digest costs a fraction of a parse (docs/performance.md).
const lastAnswer = new LRUCache<string, string>({ max: 10_000 });

/**
 * A /keys/query answer streaming to the client unchanged: its chunks are kept by reference and
 * parsed once it has all gone out, so the client's bytes never wait for us.
 */
export function watchKeysQuery(h: SelfHeal, up: IncomingMessage, who: Requester, requested: Record<string, string[]>, remote: readonly string[]): void {
  if (up.statusCode !== 200 || up.headers["content-encoding"]) return;
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
    if (!held) return;
    setImmediate(() => {
      const raw = Buffer.concat(held);
      const key = remote.join("\n");
      const digest = createHash("sha1").update(raw).digest("base64");
      if (lastAnswer.get(key) === digest) return;
      lastAnswer.set(key, digest);
      let answer: unknown;
      try {
        answer = JSON.parse(raw.toString("utf8"));
      } catch {
        return;
      }
      if (isObject(answer)) afterKeysQuery(h, who, requested, remote, answer);
    });
  });
}

/** To-device clues a device received in its /sync body. */
export function onToDevice(h: SelfHeal | undefined, who: Requester, clues: ToDeviceClue[]): void {
  if (!h?.detector) return;
  void h.detector.toDevice(who, clues).catch(() => {});
}

/** A watch over a /sync body's to-device events for `who`, or undefined with --detect off. */
export function toDeviceWatch(h: SelfHeal | undefined, who: Requester, flavour: SyncFlavour): ToDeviceWatch | undefined {
  const detector = h?.detector;
  if (!detector) return undefined;
  return new ToDeviceWatch((clues) => void detector.toDevice(who, clues).catch(() => {}), flavour);
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
