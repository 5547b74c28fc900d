// delivery.test.ts once more, with the proxy's state in PostgreSQL (--database postgres://…):
// refresh, overlay, injection, acknowledgement and the early wake, as with SQLite.
import { afterAll } from "vitest";
import { useTestDatabase } from "../helpers/proxy.ts";
import { closeTestStores, databasePerDataDir, testPostgres } from "../helpers/stores.ts";

useTestDatabase(databasePerDataDir(await testPostgres()));
afterAll(closeTestStores);
await import("./delivery.test.ts");
