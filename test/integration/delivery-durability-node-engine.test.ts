// delivery-durability.test.ts once more, through the node:http engine (--engine node): under Bun
// the default engine serves /sync from the byte-level front end's gate, this one from the app.
import { useTestEngine } from "../helpers/proxy.ts";

useTestEngine("node");
await import("./delivery-durability.test.ts");
