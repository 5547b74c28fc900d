// refresh-join-late.test.ts once more, with the proxy's state in PostgreSQL (--database postgres://…).
import { afterAll } from "vitest";
import { useTestDatabase } from "../helpers/proxy.ts";
import { closeTestStores, databasePerDataDir, testPostgres } from "../helpers/stores.ts";

useTestDatabase(databasePerDataDir(await testPostgres()));
afterAll(closeTestStores);
await import("./refresh-join-late.test.ts");
