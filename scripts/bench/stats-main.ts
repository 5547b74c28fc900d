// Bench only: the proxy's CLI (src/main.ts, same flags) with a look inside its memory. A line
// "stats <tag>" on stdin prints one JSON line {"benchStats": tag, …} to stderr: RSS, JSC's heap
// (heapSize: the objects, live or not yet collected; objectTypeCounts, the largest), the
// allocator's own figures (mimalloc) and what the engine holds outside the heap. "gc <tag>" does
// the same after a full collection: the live heap. Nothing of this is in src: the proxy itself
// has no such hook (scripts/bench-heal.ts parts 3 and 3b use it).
import { heapStats, memoryUsage } from "bun:jsc";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";

const TOP = Number(process.env.BENCH_STATS_TOP ?? 25);

/** RSS by kind (/proc/self/status): anonymous (heap, malloc), file-backed (mapped files, code), shared. */
function rssKinds(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of readFileSync("/proc/self/status", "utf8").matchAll(/^(RssAnon|RssFile|RssShmem):\s+(\d+) kB/gm))
    out[m[1]!] = Number(m[2]) * 1024;
  return out;
}

function stats(tag: string, collected: boolean): void {
  const t0 = performance.now();
  if (collected) Bun.gc(true);
  const gcMs = performance.now() - t0;
  const h = heapStats();
  const m = memoryUsage();
  const types = Object.entries(h.objectTypeCounts)
    .sort((a, b) => b[1] - a[1])
    .slice(0, TOP);
  process.stderr.write(
    `${JSON.stringify({
      benchStats: tag,
      collected,
      gcMs: Math.round(gcMs),
      rss: process.memoryUsage.rss(),
      ...rssKinds(),
      heapSize: h.heapSize,
      heapCapacity: h.heapCapacity,
      extraMemorySize: h.extraMemorySize,
      objectCount: h.objectCount,
      protectedObjectCount: h.protectedObjectCount,
      mallocCurrent: m.current,
      mallocPeak: m.peak,
      mallocCommit: m.currentCommit,
      mallocPeakCommit: m.peakCommit,
      types: Object.fromEntries(types),
    })}\n`,
  );
}

createInterface({ input: process.stdin }).on("line", (line) => {
  const [cmd, tag = ""] = line.trim().split(/\s+/, 2);
  if (cmd === "stats" || cmd === "gc") stats(tag, cmd === "gc");
});
// BENCH_STATS_GC_MS=n: a full collection every n ms, to measure what a periodic collection in
// the audit's idle time would buy (docs/performance.md, ninth session).
const gcEvery = Number(process.env.BENCH_STATS_GC_MS ?? 0);
if (gcEvery > 0) setInterval(() => Bun.gc(true), gcEvery).unref();
// The readline on stdin must not be what keeps the proxy alive (it runs until SIGTERM anyway).
process.stdin.unref?.();

await import("../../src/main.ts");
