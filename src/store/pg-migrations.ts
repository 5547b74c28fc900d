// Versioned schema migrations of the PostgreSQL store, tracked in the one-row table
// schema_version. Rules as for SQLite (migrations.ts): never edit a shipped migration; append a
// new one. Migration N (1-based) brings the schema from version N-1 to N. PostgreSQL's DDL is
// transactional: each migration commits together with its new version, or not at all.
import type { Sql } from "postgres";

// Keys that are compared and sorted (user ids, targets, destinations) use the "C" collation:
// byte order, as SQLite's BINARY, whatever locale the database was created with, so both back
// ends walk and list in the same order. Times are epoch milliseconds (bigint). `seq` orders rows
// as SQLite's rowid does (insertion order; an upsert keeps it).
export const PG_MIGRATIONS: readonly string[] = [
  // 1: the schema of SQLite's migrations 1-5 in one step, and the retry lease (claimDueRetries).
  `
  CREATE TABLE snapshots (
    user_id          text COLLATE "C" PRIMARY KEY,
    stream_id        bigint NOT NULL,
    devices          text NOT NULL,
    master_key       text,
    self_signing_key text,
    fetched_at       bigint NOT NULL,
    invalid_devices  text
  );
  CREATE TABLE backoffs (
    destination   text COLLATE "C" PRIMARY KEY,
    failures      integer NOT NULL,
    retry_at      bigint NOT NULL,
    last_probe_at bigint NOT NULL
  );
  CREATE TABLE retries (
    seq          bigserial,
    user_id      text COLLATE "C" PRIMARY KEY,
    attempts     integer NOT NULL,
    due_at       bigint NOT NULL,
    requested_by text NOT NULL,
    last_error   text,
    holder       text,
    lease_until  bigint NOT NULL DEFAULT 0
  );
  CREATE INDEX retries_due ON retries (due_at);
  CREATE TABLE pending (
    seq        bigserial,
    user_id    text COLLATE "C" NOT NULL,
    device_id  text COLLATE "C" NOT NULL,
    target     text COLLATE "C" NOT NULL,
    carried_in text[] NOT NULL,
    added_at   bigint NOT NULL,
    PRIMARY KEY (user_id, device_id, target)
  );
  CREATE TABLE trackers (
    target      text COLLATE "C" NOT NULL,
    user_id     text COLLATE "C" NOT NULL,
    device_id   text COLLATE "C" NOT NULL,
    server_name text COLLATE "C" NOT NULL,
    last_seen   bigint NOT NULL,
    PRIMARY KEY (target, user_id, device_id)
  );
  CREATE INDEX trackers_server ON trackers (server_name, target);
  CREATE INDEX trackers_last_seen ON trackers (last_seen);
  CREATE TABLE heartbeat (
    id integer PRIMARY KEY CHECK (id = 1),
    at bigint NOT NULL
  );
  CREATE TABLE sliding_conns (
    seq       bigserial,
    user_id   text COLLATE "C" NOT NULL,
    device_id text COLLATE "C" NOT NULL,
    conn_id   text COLLATE "C" NOT NULL,
    last_seen bigint NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id)
  );
  CREATE INDEX sliding_conns_last_seen ON sliding_conns (last_seen);
  CREATE TABLE sliding_pending (
    seq        bigserial,
    user_id    text COLLATE "C" NOT NULL,
    device_id  text COLLATE "C" NOT NULL,
    conn_id    text COLLATE "C" NOT NULL,
    target     text COLLATE "C" NOT NULL,
    carried_in text[] NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id, target)
  );
  CREATE TABLE hs_views (
    user_id text COLLATE "C" PRIMARY KEY,
    body    text NOT NULL,
    seen_at bigint NOT NULL
  );
  `,
  // 2: as SQLite's 6: carried_in holds the suffix of ours (`.mrp_` and 12 characters,
  // delivery/tokens.ts) an answer's position ends with, not the whole position.
  `
  UPDATE pending SET carried_in = ARRAY(
      SELECT right(x, 17) FROM unnest(carried_in) WITH ORDINALITY AS u(x, o) ORDER BY o)
    WHERE cardinality(carried_in) > 0;
  UPDATE sliding_pending SET carried_in = ARRAY(
      SELECT right(x, 17) FROM unnest(carried_in) WITH ORDINALITY AS u(x, o) ORDER BY o)
    WHERE cardinality(carried_in) > 0;
  `,
  // 3: the cluster's coordination tables (src/cluster/): buckets, leases and slots are worth
  // nothing after a crash of the database, hence UNLOGGED (no write-ahead log, emptied by crash
  // recovery; a lease lost that way only lets one more fetch through). IF NOT EXISTS: builds
  // before this migration created them outside the versions, so a database at version 2 that
  // replicas have used has them already (same shape), and one migrate-store filled has not.
  `
  CREATE UNLOGGED TABLE IF NOT EXISTS cluster_buckets (
    name   text NOT NULL,
    key    text NOT NULL,
    tokens double precision NOT NULL,
    at     timestamptz NOT NULL,
    granted boolean NOT NULL,
    PRIMARY KEY (name, key)
  );
  CREATE UNLOGGED TABLE IF NOT EXISTS cluster_flights (
    key        text PRIMARY KEY,
    holder     text,
    expires_at timestamptz NOT NULL,
    landed_at  timestamptz,
    ok         boolean,
    result     text
  );
  CREATE UNLOGGED TABLE IF NOT EXISTS cluster_slots (
    destination text NOT NULL,
    slot        integer NOT NULL,
    holder      text NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (destination, slot)
  );
  `,
  // 4: as SQLite's 7: what started a refresh that failed, so its retry is counted under it.
  `
  ALTER TABLE retries ADD COLUMN heal_trigger text;
  `,
  // 5: named leases one replica at a time holds (cluster/pg-lease.ts: the audit), with the
  // holder's state (the audit's place in its pass). UNLOGGED as the other cluster tables: a
  // crash of the database costs at most the place, and the pass starts again.
  `
  CREATE UNLOGGED TABLE cluster_leases (
    name       text PRIMARY KEY,
    holder     text,
    expires_at timestamptz NOT NULL,
    state      text
  );
  `,
];

export const PG_SCHEMA_VERSION = PG_MIGRATIONS.length;

// Any constant: every replica takes the same advisory lock, so two starting at once migrate
// one after the other (the second finds the work done).
const MIGRATION_LOCK = 0x6d7270; // "mrp"

/** The schema version, 0 for an empty database. */
export async function pgSchemaVersion(sql: Sql): Promise<number> {
  const [t] = await sql`SELECT to_regclass('schema_version') IS NOT NULL AS present`;
  if (!t?.present) return 0;
  const [row] = await sql`SELECT version FROM schema_version`;
  return Number(row?.version ?? 0);
}

/** A database a newer build migrated: waiting never makes it usable by this one. */
export class NewerSchema extends Error {}

/** Applies the missing migrations under an advisory lock; refuses a newer schema. */
export async function migratePostgres(sql: Sql): Promise<{ from: number; to: number }> {
  return sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`;
    await tx`CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)`;
    const [row] = await tx`SELECT version FROM schema_version`;
    if (!row) await tx`INSERT INTO schema_version (version) VALUES (0)`;
    const from = Number(row?.version ?? 0);
    if (from > PG_SCHEMA_VERSION) {
      // A newer build migrated this database; running old code on it could corrupt its meaning.
      throw new NewerSchema(`store schema version ${from} is newer than this build supports (${PG_SCHEMA_VERSION})`);
    }
    for (let v = from; v < PG_SCHEMA_VERSION; v++) await tx.unsafe(PG_MIGRATIONS[v] as string);
    await tx`UPDATE schema_version SET version = ${PG_SCHEMA_VERSION}`;
    return { from, to: PG_SCHEMA_VERSION };
  }) as Promise<{ from: number; to: number }>;
}
