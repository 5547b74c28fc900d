// The benchmark suite: every family in one run on one machine, one table. Each figure sits
// beside its reference measured in the same run (alternating with the proxy where there is
// one), so machine noise cancels. See docs/performance.md for the method and the limits.
//
//   npx bun scripts/bench.ts > /tmp/bench.txt          every family (about 4 minutes on 2 cores)
//   npx bun scripts/bench.ts --only=delivery,storms    a subset
//   BENCH_REF=HEAD …     build a committed revision rather than the working tree
//   BENCH_BINARY=path …  measure an existing binary
//   BENCH_DATA_ROOT=/dev/shm …  keep the proxy's SQLite on tmpfs (shows what fsync costs)
//   npx bun scripts/bench.ts --install   first install wrk and nginx-light with apt-get if missing
// Needs wrk and nginx (Debian nginx-light) on PATH. Binds 127.0.0.1 only.
import { spawnSync } from "node:child_process";
import { cpus, release } from "node:os";
import { BUN, binary } from "./bench/binary.ts";
import { runDelivery } from "./bench/delivery.ts";
import { runIdle } from "./bench/idle.ts";
import { runPassthrough } from "./bench/passthrough.ts";
import { runReplicas } from "./bench/replicas.ts";
import { hardFdLimit, nproc } from "./bench/procs.ts";
import { runStartup } from "./bench/startup.ts";
import { runStorms } from "./bench/storms.ts";
import { runStreaming } from "./bench/streaming.ts";
import { failedRow, renderTable, type Row } from "./bench/table.ts";

const families: [string, string, () => Promise<Row[]>][] = [
  ["passthrough", "1 pass-through", () => runPassthrough({ seconds: 3, rounds: 6 })],
  ["streaming", "2 streaming", () => runStreaming({ rounds: 3 })],
  ["idle", "3 idle long-polls", () => runIdle({ idleSeconds: 10 })],
  ["delivery", "4 delivery", () => runDelivery({ samples: 150, wakes: 20 })],
  ["storms", "5 storms", () => runStorms()],
  ["startup", "6 start-up", () => runStartup(5)],
  // Needs Debian's postgresql (a throw-away cluster, test/helpers/postgres.ts).
  ["replicas", "7 replicas", () => runReplicas({ seconds: 3, rounds: 5, wakes: 60, storm: 1000 })],
];

const only = process.argv
  .find((a) => a.startsWith("--only="))
  ?.slice(7)
  .split(",");
const unknown = only?.filter((o) => !families.some(([k]) => k === o));
if (unknown?.length) {
  console.error(`unknown family: ${unknown.join(", ")} (known: ${families.map(([k]) => k).join(", ")})`);
  process.exit(2);
}
const version = (cmd: string, args: string[]) => {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  return r.error ? "missing" : `${r.stdout}${r.stderr}`.trim().split("\n")[0]!;
};

// The references are system programs. Without them most families could not run, so say so
// before anything starts, rather than as a table of failed rows two minutes later.
const tools = { wrk: ["wrk", ["--version"]], nginx: ["nginx-light", ["-v"]] } as const;
const missingTools = () => Object.entries(tools).filter(([cmd, [, args]]) => version(cmd, [...args]) === "missing");
if (missingTools().length && process.argv.includes("--install")) {
  const packages = missingTools().map(([, [pkg]]) => pkg);
  process.stderr.write(`bench: installing ${packages.join(", ")} with apt-get\n`);
  for (const args of [
    ["update", "-qq"],
    ["install", "-y", "-qq", ...packages],
  ]) {
    const r = spawnSync("apt-get", args, { stdio: "inherit" });
    if (r.status !== 0) {
      console.error(
        `bench: apt-get ${args.join(" ")} failed (${r.error?.message ?? `exit ${r.status}`}); install ${packages.join(" ")} by hand`,
      );
      process.exit(2);
    }
  }
}
if (missingTools().length) {
  const missing = missingTools();
  console.error(
    `bench: ${missing.map(([cmd]) => cmd).join(" and ")} not found on PATH. On Debian: apt-get install -y ${missing.map(([, [pkg]]) => pkg).join(" ")} (or run the bench with --install).`,
  );
  process.exit(2);
}

const started = performance.now();
const bin = binary();
const rows: Row[] = [];
for (const [key, label, run] of families) {
  if (only && !only.includes(key)) continue;
  const t = performance.now();
  process.stderr.write(`bench: ${label}…`);
  try {
    rows.push(...(await run()));
  } catch (e) {
    rows.push(failedRow(label, e));
    process.stderr.write(` failed: ${e instanceof Error ? e.message : String(e)}\n`);
  }
  process.stderr.write(` ${((performance.now() - t) / 1000).toFixed(0)} s\n`);
}

const missed = rows.filter((r) => r.met === false).length;
console.log(`# matrix-resync-proxy benchmarks, ${new Date().toISOString()}

proxy: compiled binary from ${bin.source}; machine: ${nproc()} cores (${cpus()[0]?.model ?? "?"}), Linux ${release()}, open-files hard limit ${hardFdLimit()};
the load generators and fakes share these cores. Bun ${version(BUN, ["--version"])}, ${version("wrk", ["--version"])}, ${version("nginx", ["-v"])}.

${renderTable(rows)}

${rows.length} figures, ${missed} target(s) missed; total ${((performance.now() - started) / 1000).toFixed(0)} s.`);
process.exit(0);
