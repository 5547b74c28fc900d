// The PostgreSQL store's schema (src/store/pg-migrations.ts): replicas starting at once migrate
// an empty database once between them; a database migrated by a newer build is refused with
// one line, before anything is written.
import postgres from "postgres";
import { afterAll, expect, it } from "vitest";
import { PgCluster } from "../../src/cluster/pg-cluster.ts";
import { createLogger } from "../../src/observe/log.ts";
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

// The cluster's tables as builds up to schema version 2 made them, outside the versions, as each
// replica's cluster opened (src/cluster/pg-schema.ts then).
const VERSION_2_CLUSTER_TABLES = [
  `CREATE UNLOGGED TABLE IF NOT EXISTS cluster_buckets (
     name text NOT NULL, key text NOT NULL, tokens double precision NOT NULL,
     at timestamptz NOT NULL, granted boolean NOT NULL, PRIMARY KEY (name, key))`,
  `CREATE UNLOGGED TABLE IF NOT EXISTS cluster_flights (
     key text PRIMARY KEY, holder text, expires_at timestamptz NOT NULL,
     landed_at timestamptz, ok boolean, result text)`,
  `CREATE UNLOGGED TABLE IF NOT EXISTS cluster_slots (
     destination text NOT NULL, slot integer NOT NULL, holder text NOT NULL,
     expires_at timestamptz NOT NULL, PRIMARY KEY (destination, slot))`,
];

/** A database as a build at schema version 2 left it; `clusterUsed`: replicas ran on it. */
async function version2Database(clusterUsed: boolean): Promise<string> {
  const db = await freshDatabase("postgres");
  const sql = postgres(db, { onnotice: () => {} });
  await sql.unsafe(PG_MIGRATIONS[0]!);
  await sql.unsafe(PG_MIGRATIONS[1]!);
  await sql`CREATE TABLE schema_version (version integer NOT NULL)`;
  await sql`INSERT INTO schema_version (version) VALUES (2)`;
  if (clusterUsed) {
    for (const t of VERSION_2_CLUSTER_TABLES) await sql.unsafe(t);
    await sql`INSERT INTO cluster_buckets (name, key, tokens, at, granted) VALUES ('target', '@a:x', 0.5, now(), false)`;
  }
  await sql.end();
  return db;
}

/** The cluster's tables and whether each is UNLOGGED ('u'), by name. */
async function clusterTables(sql: postgres.Sql): Promise<Record<string, string>> {
  const rows = await sql<{ relname: string; relpersistence: string }[]>`SELECT relname, relpersistence FROM pg_class
    WHERE relkind = 'r' AND relname IN ('cluster_buckets', 'cluster_flights', 'cluster_leases', 'cluster_slots')
    ORDER BY relname`;
  return Object.fromEntries(rows.map((r) => [r.relname, r.relpersistence]));
}

const ALL_UNLOGGED = { cluster_buckets: "u", cluster_flights: "u", cluster_leases: "u", cluster_slots: "u" };

it.each([
  ["replicas have used (the cluster's tables made outside the versions)", true],
  ["migrate-store filled (no cluster tables)", false],
])(
  "a version-2 database %s: the store's start brings it to this version, the cluster's tables UNLOGGED and usable",
  async (_, used) => {
    const db = await version2Database(used);
    const store = await openDatabase(db);
    const sql = postgres(db, { onnotice: () => {} });
    try {
      expect(await sql`SELECT version FROM schema_version`).toEqual([{ version: PG_SCHEMA_VERSION }]);
      expect(PG_SCHEMA_VERSION).toBeGreaterThanOrEqual(3);
      // The store alone made them (the cluster is opened after it and no longer creates any).
      expect(await clusterTables(sql)).toEqual(ALL_UNLOGGED);
      // Coordination rows a running deployment held are kept through the upgrade.
      const kept = await sql`SELECT tokens FROM cluster_buckets WHERE name = 'target' AND key = '@a:x'`;
      expect(kept).toEqual(used ? [{ tokens: 0.5 }] : []);
      const cluster = await PgCluster.open({ url: db, log: createLogger("error", () => {}) });
      try {
        expect(await cluster.limiter("target", { burst: 3, perSecond: 0.1 }).take("@b:x")).toBe(0);
        expect(await cluster.flight("k", async () => ({ ok: true, result: "r" }), 0)).toEqual({
          ok: true,
          result: "r",
        });
        const release = await cluster.slot("x", 3);
        release();
      } finally {
        await cluster.close();
      }
    } finally {
      await sql.end();
      await store.close();
    }
  },
);
