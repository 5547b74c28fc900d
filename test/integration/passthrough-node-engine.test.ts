// passthrough.test.ts once more, through the node:http engine (--engine node). Under Bun the
// default engine is the byte-level front end (src/engine/bun/), so running the same file both
// ways holds both engines to one pass-through contract. (Under Deno both runs use node:http.)
import { useTestEngine } from "../helpers/proxy.ts";

useTestEngine("node");
await import("./passthrough.test.ts");
