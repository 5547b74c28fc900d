// --front-threads on a host with cores to spare: pass-through req/s and CPU per request for
// the proxy with N front-end threads beside nginx with N workers, N = each argument in turn,
// in front of nginx answering from memory (one worker per core, so the upstream is never the
// limit). wrk gets N threads and 64 connections per thread. A 2-core machine cannot show the
// scaling: wrk, the upstream and the relay already share its cores (docs/performance.md).
//
//   npx bun scripts/bench-threads.ts 1 2 4 8      (prints one markdown table)
//
// Run it where the cores outnumber 2 × the largest N (wrk needs its own), or pin the parts:
// the table's "cores" column says how much CPU the proxy used.
import { measurePassthrough } from "./bench/passthrough.ts";
import { binary } from "./bench/binary.ts";
import { nproc } from "./bench/procs.ts";
import { fmt } from "./bench/table.ts";

const ns = process.argv.slice(2).map(Number);
if (ns.length === 0 || ns.some((n) => !Number.isInteger(n) || n < 1))
  throw new Error("usage: bun scripts/bench-threads.ts N [N …]  (front-end threads, e.g. 1 2 4 8)");
const bin = binary();
const rows: string[] = [];
for (const n of ns) {
  const [c] = await measurePassthrough({
    seconds: 5,
    rounds: 3,
    upstreams: ["nginx"],
    threads: { front: n, nginx: n, wrk: n, conns: 64 * n, upstreamWorkers: "auto" },
  });
  const { nginx: g, proxy: p } = c!.results;
  const cpu = c!.cpuPerRequest.proxy;
  rows.push(
    `| ${n} | ${fmt(p.rps, 0)} | ${fmt(g.rps, 0)} | ${fmt(p.rps / g.rps, 2)}× | ${fmt(c!.proxyCores, 2)} | ${fmt(cpu.user, 1)} + ${fmt(cpu.system, 1)} | ${fmt(p.p99, 2)} / ${fmt(g.p99, 2)} |`,
  );
  process.stderr.write(`threads ${n}: proxy ${fmt(p.rps, 0)} req/s, nginx ${fmt(g.rps, 0)}\n`);
}
console.log(`--front-threads sweep, ${bin.source}, ${nproc()} cores; 3 alternating rounds of 5 s (median)

| threads (nginx workers) | proxy req/s | nginx req/s | ratio | proxy cores used | proxy CPU per request, µs (user + kernel) | p99 ms, proxy / nginx |
|---|---|---|---|---|---|---|
${rows.join("\n")}`);
process.exit(0);
