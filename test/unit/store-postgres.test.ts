// The PostgreSQL store's schema (src/store/pg-migrations.ts): replicas starting at once migrate
// an empty database once between them; a database migrated by a newer build is refused with
// one line, before anything is written.
import postgres from "postgres";
import { afterAll, expect, it } from "vitest";
import { PG_MIGRATIONS, PG_SCHEMA_VERSION } from "../../src/store/pg-migrations.ts";
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

it("a version-1 database's carried positions become their suffixes of ours, which acknowledge them", async () => {
  const db = await freshDatabase("postgres");
  const sql = postgres(db, { onnotice: () => {} });
  await sql.unsafe(PG_MIGRATIONS[0]!);
  await sql`CREATE TABLE schema_version (version integer NOT NULL)`;
  await sql`INSERT INTO schema_version (version) VALUES (1)`;
  await sql`INSERT INTO pending (user_id, device_id, target, carried_in, added_at)
    VALUES ('@me:h', 'D', '@a:x', ${["s1.mrp_aaaaaaaaaaaa", "s_2.long_token.mrp_bbbbbbbbbbbb"]}::text[], 1),
           ('@me:h', 'D', '@b:x', '{}', 1)`;
  await sql`INSERT INTO sliding_pending (user_id, device_id, conn_id, target, carried_in)
    VALUES ('@me:h', 'D', 'c', '@a:x', ${["p9.mrp_cccccccccccc"]}::text[])`;
  await sql.end();
  const s = await openDatabase(db);
  expect(await s.pendingFor("@me:h", "D")).toEqual([
    { target: "@a:x", carriedIn: [".mrp_aaaaaaaaaaaa", ".mrp_bbbbbbbbbbbb"] },
    { target: "@b:x", carriedIn: [] },
  ]);
  expect(await s.pendingFor("@me:h", "D", "c")).toEqual([{ target: "@a:x", carriedIn: [".mrp_cccccccccccc"] }]);
  expect(await s.ackToken("@me:h", "D", ".mrp_bbbbbbbbbbbb")).toBe(1);
  expect(await s.ackToken("@me:h", "D", ".mrp_cccccccccccc", "c")).toBe(1);
  await s.close();
});
