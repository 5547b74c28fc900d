// Where a profiled proxy spent its JavaScript thread's time, by samples: each function's own
// share and its share including callees. Usage: bun profile-summary.ts FILE.cpuprofile [TOP]
//
// Counts samples rather than summing their time deltas, because a sample's delta also covers
// the idle wait before it, which --cpu-prof-md charges to whatever function ran last.
import { readFileSync } from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

const [file, top = "40"] = process.argv.slice(2);
if (!file) {
  console.error("usage: bun scripts/bench/profile-summary.ts FILE.cpuprofile [TOP]");
  process.exit(2);
}
const { nodes, samples } = JSON.parse(readFileSync(file, "utf8")) as { nodes: ProfileNode[]; samples: number[] };
const byId = new Map(nodes.map((n) => [n.id, n]));
const parentOf = new Map<number, number>();
for (const n of nodes) for (const c of n.children ?? []) parentOf.set(c, n.id);
const nameOf = ({ callFrame: f }: ProfileNode) =>
  `${f.functionName || "(anonymous)"} ${f.url ? `${f.url.replace(/^file:\/\//, "").replace(process.cwd() + "/", "")}:${f.lineNumber + 1}` : "[native]"}`;

const own = new Map<string, number>();
const inclusive = new Map<string, number>();
for (const s of samples) {
  const name = nameOf(byId.get(s)!);
  own.set(name, (own.get(name) ?? 0) + 1);
  const seen = new Set<string>(); // a recursive function counts once per sample
  for (let id: number | undefined = s; id !== undefined; id = parentOf.get(id)) {
    const n = nameOf(byId.get(id)!);
    if (!seen.has(n)) inclusive.set(n, (inclusive.get(n) ?? 0) + 1), seen.add(n);
  }
}
const pct = (n: number) => ((100 * n) / samples.length).toFixed(1).padStart(5);
console.log(`${samples.length} samples\n  own  incl  function`);
for (const [name, n] of [...own].sort((a, b) => b[1] - a[1]).slice(0, Number(top)))
  console.log(`${pct(n)} ${pct(inclusive.get(name)!)}  ${name}`);
