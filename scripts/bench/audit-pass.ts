// Part 3b of scripts/bench-heal.ts: the proxy's memory over whole passes of the audit. A proxy
// of its own (scripts/bench/stats-main.ts: the CLI plus a look at its heap on request) walks
// 10,000 trackers spread over one interval; RSS is sampled each second until the remote has seen
// each pass's 10,000 fetches, and JSC's heap (without collecting: live and not yet collected
// objects) as each quarter is done. After the last pass, one full collection gives the live heap:
// a live heap that ends where it started, under an RSS that grew, is memory the engine and its
// allocator keep for reuse, not state the proxy holds. A second pass tells warm-up (the heap
// grown to the pace, then reused) from growth kept per check (which a second pass adds again).
import type { FakeRemote } from "../../test/helpers/fake-remote.ts";
import type { Proc } from "./procs.ts";
import { cpuSeconds, rssBytes } from "./procs.ts";

export interface PassWorld {
  remote: FakeRemote;
  users: readonly string[];
  dataDir: string;
  start(flags: string[], dataDir: string): Promise<{ pid: number; proc: Proc; stop(): Promise<void> }>;
}

export interface Stats {
  rss: number;
  RssAnon: number;
  RssFile: number;
  RssShmem: number;
  heapSize: number;
  heapCapacity: number;
  extraMemorySize: number;
  objectCount: number;
  mallocCurrent: number;
  mallocCommit: number;
  types: Record<string, number>;
}

export const mb = (n: number) => `${(n / 1048576).toFixed(1)} MB`;
const pc = (n: number) => `${n.toFixed(2)} %`;

/** One reading of the proxy's heap (stats-main.ts), collected first when `gc`. */
export async function heapOf(proc: Proc, tag: string, gc = false): Promise<Stats> {
  const wait = proc.waitLine(new RegExp(`^\\{"benchStats":"${tag}"`), 60_000);
  proc.send(`${gc ? "gc" : "stats"} ${tag}`);
  return JSON.parse((await wait).input!) as Stats;
}

export const heapLine = (s: Stats) =>
  `RSS anonymous ${mb(s.RssAnon)}, file ${mb(s.RssFile)}, shared ${mb(s.RssShmem)}; heap ${mb(s.heapSize)} in ${s.objectCount} objects (capacity ${mb(s.heapCapacity)}, outside the heap ${mb(s.extraMemorySize)}), malloc ${mb(s.mallocCurrent)} (committed ${mb(s.mallocCommit)})`;

/** Object types whose count moved most between two readings. */
function typeMoves(a: Stats, b: Stats, n = 8): string {
  const names = new Set([...Object.keys(a.types), ...Object.keys(b.types)]);
  return [...names]
    .map((k) => [k, (b.types[k] ?? 0) - (a.types[k] ?? 0)] as const)
    .filter(([, d]) => d !== 0)
    .sort((x, y) => Math.abs(y[1]) - Math.abs(x[1]))
    .slice(0, n)
    .map(([k, d]) => `${k} ${d > 0 ? "+" : ""}${d}`)
    .join(", ");
}

export async function wholePasses(w: PassWorld, passMs: number, passes: number): Promise<void> {
  const { remote, users } = w;
  const f0 = remote.count({ endpoint: "devices" });
  const p = await w.start(["--audit-interval-ms", String(passMs), "--audit-max-per-second", "1000"], w.dataDir);
  // Heals the proxy logged: with the homeserver's views written, a pass finds nothing to heal.
  let heals = 0;
  p.proc.child.stderr?.on("data", (c: string) => void (heals += c.split("device list healed").length - 1));
  // RSS is taken as the proxy says it listens: the pass starts then.
  const r0 = rssBytes(p.pid);
  const s0 = await heapOf(p.proc, "start", process.env.BENCH_HEAL_STATS === "gc");
  const ft0 = performance.now();
  let peak = r0;
  const ends: { rss: number; s: number; cpu: number; done: number; quarters: number[]; heap: Stats }[] = [];
  let rAfter = 0;
  let pt0 = performance.now(),
    pc0 = cpuSeconds(p.pid);
  for (let pass = 1; pass <= passes; pass++) {
    // RSS as each quarter of the pass is done: growth in step with the checks made is kept per
    // check; growth that levels off is the heap sized to the pace.
    const quarters: number[] = [];
    let heap = s0;
    for (let done = 0; done < users.length * pass && performance.now() - pt0 < 3 * passMs; ) {
      await new Promise((r) => setTimeout(r, 1_000));
      const rss = rssBytes(p.pid);
      peak = Math.max(peak, rss);
      done = remote.count({ endpoint: "devices" }) - f0;
      const inPass = done - users.length * (pass - 1);
      while (quarters.length < 4 && inPass >= ((quarters.length + 1) * users.length) / 4) {
        quarters.push(rss - r0);
        if (process.env.BENCH_HEAL_STATS) {
          heap = await heapOf(p.proc, `p${pass}q${quarters.length}`, process.env.BENCH_HEAL_STATS === "gc");
          console.log(`   [pass ${pass} quarter ${quarters.length}] RSS ${mb(heap.rss)}: ${heapLine(heap)}`);
          console.log(`      types moved since the start: ${typeMoves(s0, heap)}`);
        }
      }
    }
    const s = (performance.now() - pt0) / 1000;
    const rss = rssBytes(p.pid);
    if (!process.env.BENCH_HEAL_STATS) heap = await heapOf(p.proc, `end${pass}`);
    ends.push({
      rss,
      s,
      cpu: ((cpuSeconds(p.pid) - pc0) / s) * 100,
      done: remote.count({ endpoint: "devices" }) - f0 - users.length * (pass - 1),
      quarters,
      heap,
    });
    pt0 = performance.now();
    pc0 = cpuSeconds(p.pid);
    // 5 s into the next pass (its time counts from the end of this one).
    await new Promise((r) => setTimeout(r, 5_000));
    if (pass === 1) rAfter = rssBytes(p.pid);
  }
  const passS = (performance.now() - ft0) / 1000;
  const live = await heapOf(p.proc, "live", true);
  const first = ends[0]!;
  console.log(
    `3b. one whole pass of the 10,000 (--audit-interval-ms ${passMs}, --audit-max-per-second 1000): ${first.done} fetches in ${first.s.toFixed(1)} s, proxy CPU ${pc(first.cpu)} of one core`,
  );
  console.log(
    `   proxy RSS growth over the pass: ${mb(first.rss - r0)} at its end, ${mb(peak - r0)} at the peak; 5 s into the next pass ${mb(rAfter - r0)} (RSS at the start ${mb(r0)})   budget: < 20 MB`,
  );
  console.log(`   RSS growth as each quarter of the pass was done: ${first.quarters.map(mb).join(", ")}`);
  for (const [i, e] of ends.entries()) {
    if (i === 0) continue;
    console.log(
      `   pass ${i + 1}: ${e.done} fetches in ${e.s.toFixed(1)} s, CPU ${pc(e.cpu)}; RSS growth from the start at each quarter ${e.quarters.map(mb).join(", ")} (${mb(e.rss - ends[i - 1]!.rss)} over this pass)`,
    );
  }
  console.log(`   the heap at the start (listening, not collected): ${heapLine(s0)}`);
  for (const [i, e] of ends.entries())
    console.log(`   at the end of pass ${i + 1} (not collected): ${heapLine(e.heap)}`);
  console.log(
    `   live after one full collection ${passS.toFixed(0)} s in: ${heapLine(live)}; RSS ${mb(live.rss)} (${mb(live.rss - r0)} over the start)`,
  );
  console.log(`   object types moved, start → live at the end: ${typeMoves(s0, live)}`);
  console.log(`   heals logged over the ${passes} passes: ${heals}`);
  await p.stop();
}
