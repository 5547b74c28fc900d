// An answer's summary (keys-answer.ts) as the reading thread sends it back (view-parser.ts).
// Sent as objects, a 1000-device view is a structured clone of some 3,000 objects and strings,
// and decoding it cost the event loop about a millisecond per answer (docs/performance.md,
// "Seventh session"). Here each view's devices travel as one JSON string, with a digest of the
// view's content: a view equal to the one held is recognised by its digest and never decoded,
// and a new one is decoded only when something reads its devices (a store write, a check).
import { createHash } from "node:crypto";
import type { HsView } from "../matrix/device.ts";
import type { AnswerSummary } from "./keys-answer.ts";

export interface WireView {
  userId: string;
  seenAt: number;
  master?: string;
  selfSigning?: string;
  /** JSON of HsView.devices. */
  devices: string;
  count: number;
  /** Of the content (devices, master, self-signing), independent of the answer's order. */
  digest: string;
}

export interface WireSummary extends Omit<AnswerSummary, "views"> {
  views: WireView[];
}

/** Hidden on a decoded view: its digest and device count, so neither needs the devices parsed. */
const DIGEST = Symbol("view digest");
const COUNT = Symbol("view device count");
type Marked = HsView & { [DIGEST]?: string; [COUNT]?: number };

/** In the reading thread. */
export function toWire(s: AnswerSummary): WireSummary {
  return {
    ...s,
    views: s.views.map((v) => {
      const ids = Object.keys(v.devices);
      const sorted = [...ids].sort().map((id) => [id, v.devices[id]]);
      const digest = createHash("sha256")
        .update(JSON.stringify([sorted, v.master ?? null, v.selfSigning ?? null]))
        .digest("base64");
      const w: WireView = {
        userId: v.userId,
        seenAt: v.seenAt,
        devices: JSON.stringify(v.devices),
        count: ids.length,
        digest,
      };
      if (v.master !== undefined) w.master = v.master;
      if (v.selfSigning !== undefined) w.selfSigning = v.selfSigning;
      return w;
    }),
  };
}

/** In the event loop: views whose devices are parsed on first read. */
export function fromWire(w: WireSummary): AnswerSummary {
  return { ...w, views: w.views.map(lazyView) };
}

function lazyView(w: WireView): HsView {
  let devices: HsView["devices"] | undefined;
  const v = { userId: w.userId } as Marked;
  Object.defineProperty(v, "devices", {
    enumerable: true,
    configurable: true,
    get: () => (devices ??= JSON.parse(w.devices) as HsView["devices"]),
    set: (d: HsView["devices"]) => void (devices = d),
  });
  if (w.master !== undefined) v.master = w.master;
  if (w.selfSigning !== undefined) v.selfSigning = w.selfSigning;
  v.seenAt = w.seenAt;
  Object.defineProperty(v, DIGEST, { value: w.digest });
  Object.defineProperty(v, COUNT, { value: w.count });
  return v;
}

/** Both views' digests, when both came from the reading thread. */
export function digestsOf(a: HsView, b: HsView): [string, string] | undefined {
  const da = (a as Marked)[DIGEST],
    db = (b as Marked)[DIGEST];
  return da !== undefined && db !== undefined ? [da, db] : undefined;
}

export function deviceCount(v: HsView): number {
  return (v as Marked)[COUNT] ?? Object.keys(v.devices).length;
}

/** `v` seen again at `at`: a copy that keeps an undecoded view undecoded. */
export function seenAgain(v: HsView, at: number): HsView {
  const copy = Object.defineProperties({}, Object.getOwnPropertyDescriptors(v)) as HsView;
  copy.seenAt = at;
  return copy;
}
