// delivery-durability.test.ts once more, with the proxy's state in PostgreSQL: what was
// acknowledged stays so, and what was not is delivered again, across a restart of the proxy.
import { afterAll } from "vitest";
import { useTestDatabase } from "../helpers/proxy.ts";
import { closeTestStores, databasePerDataDir, testPostgres } from "../helpers/stores.ts";

useTestDatabase(databasePerDataDir(await testPostgres()));
afterAll(closeTestStores);
await import("./delivery-durability.test.ts");
