// `npm run build`: one self-contained executable, dist/matrix-resync-proxy.
import { $ } from "bun";

const out = "dist/matrix-resync-proxy";
await $`mkdir -p dist`;
await $`bun build --compile --minify --sourcemap=inline src/main.ts --outfile ${out}`;
const size = Bun.file(out).size;
console.log(`built ${out} (${(size / 1e6).toFixed(1)} MB)`);
