// `npm run build`: one self-contained executable, dist/matrix-resync-proxy.
import { $ } from "bun";

const out = "dist/matrix-resync-proxy";
await $`mkdir -p dist`;
// src/front-worker.ts and src/view-worker.ts are entrypoints too: --front-threads and
// self-healing start them as Workers, and a compiled binary only embeds a worker that is built
// as its own entrypoint.
await $`bun build --compile --minify --sourcemap=inline src/main.ts src/front-worker.ts src/view-worker.ts --outfile ${out}`;
const size = Bun.file(out).size;
console.log(`built ${out} (${(size / 1e6).toFixed(1)} MB)`);
