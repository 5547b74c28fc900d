// The PostgreSQL store's schema (src/store/pg-migrations.ts): replicas starting at once migrate
// an empty database once between them; a database migrated by a newer build is refused with
// one line, before anything is written.
import postgres from "postgres";
import { afterAll, expect, it } from "vitest";
import { PG_SCHEMA_VERSION } from "../../src/store/pg-migrations.ts";
import { closeTestStores, freshDatabase, openDatabase } from "../helpers/stores.ts";

afterAll(closeTestStores);

it("three replicas starting at once on an empty database: migrated once, all of them usable", async () => {
  const db = await freshDatabase("postgres");
  const stores = await Promise.all([openDatabase(db), openDatabase(db), openDatabase(db)]);
  await stores[0]!.putRetry({ userId: "@a:x", attempts: 1, dueAt: 1, requestedBy: [] });
  for (const s of stores) expect((await s.getRetry("@a:x"))?.attempts).toBe(1);
  await Promise.all(stores.map((s) => s.close()));
  const sql = postgres(db, { onnotice: () => {} });
  expect(await sql`SELECT version FROM schema_version`).toEqual([{ version: PG_SCHEMA_VERSION }]);
  await sql.end();
});

it("refuses a database a newer build migrated, in one line, and leaves it as it was", async () => {
  const db = await freshDatabase("postgres");
  await (await openDatabase(db)).close();
  const sql = postgres(db, { onnotice: () => {} });
  await sql`UPDATE schema_version SET version = ${PG_SCHEMA_VERSION + 1}`;
  await sql`DELETE FROM heartbeat`;
  const err = await openDatabase(db).then(
    () => undefined,
    (e: Error) => e,
  );
  expect(err?.message).toBe(
    `store: ${db} is not usable: store schema version ${PG_SCHEMA_VERSION + 1} is newer than this build supports (${PG_SCHEMA_VERSION})`,
  );
  expect(await sql`SELECT version FROM schema_version`).toEqual([{ version: PG_SCHEMA_VERSION + 1 }]);
  expect(await sql`SELECT count(*)::int AS n FROM heartbeat`).toEqual([{ n: 0 }]);
  await sql.end();
});
