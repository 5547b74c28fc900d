// Cross-replica wake alone: the wake rows of the replicas family of scripts/bench.ts
// (scripts/bench/replicas-wake.ts) without its pass-through and storm parts. Two compiled
// replicas on one throw-away PostgreSQL, the fakes of the test suite in this process.
// Usage: bun scripts/bench-cluster-wake.ts [wakes=60]
import { startPostgres } from "../test/helpers/postgres.ts";
import { nproc } from "./bench/procs.ts";
import { wakes } from "./bench/replicas-wake.ts";
import { startWorld } from "./bench/replicas-world.ts";
import { renderTable } from "./bench/table.ts";

const n = Number(process.argv[2] ?? 60);
const pg = await startPostgres();
const w = await startWorld();
try {
  const db = await pg.createDatabase("bench");
  const [a, b] = [await w.start(["--database", db]), await w.start(["--database", db])];
  const rows = await wakes(w, a, b, n);
  console.log(`\nCross-replica wake, 2 compiled replicas on PostgreSQL; ${nproc()} cores shared with everything\n`);
  console.log(renderTable(rows));
} finally {
  await w.close();
  await pg.close();
}
process.exit(0);
