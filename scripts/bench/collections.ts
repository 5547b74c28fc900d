// The collector under pass-through load: a second proxy runs with JavaScriptCore's GC log
// (BUN_JSC_logGC=1) while wrk loads it, and its young ("Eden") and full collections are read
// from that log. Heap promoted per young collection should stay small: objects of finished
// requests surviving young collections means something old still reaches them. A Map that
// churned per request once promoted ~5 MB per collection here, with a full collection after
// almost every young one (src/slots.ts). The log's format is JSC's and may change: then the
// row says it could not be read.
import { startProxyChild } from "./binary.ts";
import { median } from "./table.ts";
import { wrkAsync } from "./wrk.ts";

export interface Collections {
  requests: number;
  young: number;
  full: number;
  /** Median heap growth across a young collection that followed a young one, kB. */
  promotedKb: number;
  /** Median duration of a young collection, ms. */
  youngMs: number;
}

// One collection's summary, e.g. "START M 51996kb => EdenCollection, … => 35637kb, p=1.66ms (max 3.4), cycle 7.98ms".
const LINE = /START M (\d+)kb => (Eden|Full)Collection[\s\S]*?=> (\d+)kb, p=[\d.]+ms \(max [\d.]+\), cycle ([\d.]+)ms/g;

export async function measureCollections(
  upstream: string,
  path: string,
  seconds: number,
): Promise<Collections | undefined> {
  const proxy = await startProxyChild(upstream, {
    serverName: "bench.test",
    env: { BUN_JSC_logGC: "1" },
    tailLines: 100_000,
  });
  try {
    // wrk runs without blocking this process, which keeps reading the log: a full pipe would
    // stall the proxy mid-collection.
    await wrkAsync(`${proxy.url}${path}`, 64, 1); // warm-up, not counted
    await new Promise((r) => setTimeout(r, 200));
    const from = proxy.proc.tail.length;
    const r = await wrkAsync(`${proxy.url}${path}`, 64, seconds);
    await new Promise((r) => setTimeout(r, 200)); // the last lines
    const log = proxy.proc.tail.slice(from).join("\n").replaceAll("\0", "").replace(/\s+/g, " ");
    const gcs = [...log.matchAll(LINE)].map((m) => ({ kind: m[2]!, after: Number(m[3]), ms: Number(m[4]) }));
    if (gcs.length === 0) return undefined;
    const young = gcs.filter((g) => g.kind === "Eden");
    const grown = gcs.flatMap((g, i) =>
      i > 0 && g.kind === "Eden" && gcs[i - 1]!.kind === "Eden" ? [g.after - gcs[i - 1]!.after] : [],
    );
    return {
      requests: r.rps * seconds,
      young: young.length,
      full: gcs.length - young.length,
      promotedKb: grown.length > 0 ? median(grown) : NaN,
      youngMs: young.length > 0 ? median(young.map((g) => g.ms)) : NaN,
    };
  } finally {
    await proxy.stop();
  }
}
