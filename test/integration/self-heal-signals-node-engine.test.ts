// self-heal-signals.test.ts once more, through the node:http engine (--engine node): under Bun
// the default engine reads /sync bodies in the byte-level front end's gate, this one in the app.
import { useTestEngine } from "../helpers/proxy.ts";

useTestEngine("node");
await import("./self-heal-signals.test.ts");
