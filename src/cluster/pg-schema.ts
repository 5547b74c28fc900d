// The cluster's own tables, beside the store's: leases and buckets are coordination state that
// is worth nothing after a crash of the database, hence UNLOGGED (no write-ahead log, emptied by
// crash recovery; a lease lost that way only lets one more fetch through).
import type postgres from "postgres";

const TABLES = [
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

// Any constant shared by the replicas: CREATE TABLE IF NOT EXISTS is not safe when two sessions
// run it at once (one fails on the catalog's unique index), so replicas starting together queue.
const SCHEMA_LOCK = 0x6d72_7063; // "mrpc"

export async function ensureSchema(sql: postgres.Sql): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${SCHEMA_LOCK})`;
    for (const t of TABLES) await tx.unsafe(t);
  });
}

/** Rows nobody needs any more: expired leases, outcomes past any cache window, full buckets. */
export async function sweep(sql: postgres.Sql): Promise<void> {
  await sql`DELETE FROM cluster_flights WHERE expires_at < now() - interval '1 hour'
              AND (landed_at IS NULL OR landed_at < now() - interval '1 hour')`;
  await sql`DELETE FROM cluster_slots WHERE expires_at < now() - interval '1 minute'`;
  await sql`DELETE FROM cluster_buckets WHERE at < now() - interval '1 hour'`;
}
