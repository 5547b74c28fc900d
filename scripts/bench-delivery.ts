// The delivery benchmarks alone: /sync injection (1 MB, 5 MB), the /keys/query overlay
// (1000 devices) and refresh-to-wake, each against its reference in the same run.
// Usage: bun scripts/bench-delivery.ts   (scripts/bench.ts runs every family)
import { runDelivery } from "./bench/delivery.ts";
import { nproc } from "./bench/procs.ts";
import { renderTable } from "./bench/table.ts";

const rows = await runDelivery({ samples: 150, wakes: 20 });
console.log(
  `\nDelivery, compiled proxy vs the same requests sent direct, alternating; ${nproc()} cores shared with the load generator\n`,
);
console.log(renderTable(rows));
process.exit(0);
