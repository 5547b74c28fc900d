// The import graph between the folders of src/ (docs/architecture.md "Layout"): one line per
// edge with its number of imports, then any cycle. Files directly in src/ (the entrypoints)
// are nodes of their own. Exits 1 on a cycle.
//   npx bun scripts/import-graph.ts
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..", "src");
const files: string[] = [];
const walk = (d: string): void => {
  for (const n of readdirSync(d)) {
    const p = join(d, n);
    if (statSync(p).isDirectory()) walk(p);
    else if (p.endsWith(".ts")) files.push(p);
  }
};
walk(root);

const nodeOf = (file: string): string => {
  const dir = relative(root, dirname(file));
  return dir === "" ? relative(root, file) : dir;
};

const edges = new Map<string, Map<string, number>>();
for (const f of files) {
  for (const m of readFileSync(f, "utf8").matchAll(/(?:from|import)\s*\(?\s*"(\.[^"]+\.ts)"/g)) {
    const target = resolve(dirname(f), m[1]!);
    if (!target.startsWith(root)) continue;
    const a = nodeOf(f);
    const b = nodeOf(target);
    if (a === b) continue;
    const out = edges.get(a) ?? new Map<string, number>();
    out.set(b, (out.get(b) ?? 0) + 1);
    edges.set(a, out);
  }
}

for (const a of [...edges.keys()].sort()) {
  for (const [b, n] of [...edges.get(a)!].sort()) console.log(`${a} -> ${b} (${n})`);
}

// Depth-first search; a grey node met again closes a cycle.
const state = new Map<string, "grey" | "black">();
const cycles: string[] = [];
const visit = (n: string, path: string[]): void => {
  state.set(n, "grey");
  for (const m of edges.get(n)?.keys() ?? []) {
    if (state.get(m) === "grey") cycles.push([...path.slice(path.indexOf(m)), m].join(" -> "));
    else if (!state.has(m)) visit(m, [...path, m]);
  }
  state.set(n, "black");
};
for (const n of [...edges.keys()].sort()) if (!state.has(n)) visit(n, [n]);

if (cycles.length > 0) {
  console.log(`\ncycles:\n${cycles.join("\n")}`);
  process.exit(1);
}
console.log("\nno cycles");
