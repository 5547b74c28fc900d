// Pass-through benchmark: direct vs nginx vs matrix-resync-proxy, same upstream, same run.
// Rounds alternate the three targets so machine noise hits each alike. Needs wrk and nginx
// (Debian: apt-get install wrk nginx-light). Usage: bun scripts/bench-passthrough.ts [seconds]
// The full suite (every family, one table) is scripts/bench.ts.
import { measurePassthrough, passthroughDetail } from "./bench/passthrough.ts";

const opts = { seconds: Number(process.argv[2] ?? 8), rounds: 3, bigBody: true };
console.log(`\n${passthroughDetail(await measurePassthrough(opts), opts)}`);
process.exit(0);
