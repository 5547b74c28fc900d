// sync-streams.test.ts once more, through the node:http engine (--engine node): under Bun the
// default engine is the byte-level front end, whose /sync gate and pass-through take other paths.
import { useTestEngine } from "../helpers/proxy.ts";

useTestEngine("node");
await import("./sync-streams.test.ts");
