// Versioned schema migrations, tracked in SQLite's `PRAGMA user_version` (a field of the
// database header, so it commits atomically with the DDL in the same transaction).
// Rules: never edit a shipped migration; append a new one. Migration N (1-based) brings the
// schema from version N-1 to N.

import { type SqlDatabase, writeTransaction } from "./sqlite-driver.ts";

export const MIGRATIONS: readonly string[] = [
  // 1: initial schema. JSON columns hold values the store never queries inside, except
  // pending.carried_in, which ackToken searches with json_each.
  `
  CREATE TABLE snapshots (
    user_id          TEXT PRIMARY KEY,
    stream_id        INTEGER NOT NULL,
    devices          TEXT NOT NULL,
    master_key       TEXT,
    self_signing_key TEXT,
    fetched_at       INTEGER NOT NULL
  );
  CREATE TABLE backoffs (
    destination   TEXT PRIMARY KEY,
    failures      INTEGER NOT NULL,
    retry_at      INTEGER NOT NULL,
    last_probe_at INTEGER NOT NULL
  );
  CREATE TABLE retries (
    user_id      TEXT PRIMARY KEY,
    attempts     INTEGER NOT NULL,
    due_at       INTEGER NOT NULL,
    requested_by TEXT NOT NULL,
    last_error   TEXT
  );
  CREATE INDEX retries_due ON retries (due_at);
  CREATE TABLE pending (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    target     TEXT NOT NULL,
    carried_in TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, target)
  );
  CREATE TABLE trackers (
    target      TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    server_name TEXT NOT NULL,
    last_seen   INTEGER NOT NULL,
    PRIMARY KEY (target, user_id, device_id)
  );
  CREATE INDEX trackers_server ON trackers (server_name, target);
  CREATE INDEX trackers_last_seen ON trackers (last_seen);
  CREATE TABLE heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
  );
  `,
  // 2: the ids of devices that failed validation in the remote's answer (a JSON array, NULL
  // when none), so /keys/query keeps showing the homeserver's copy of them after a restart.
  `
  ALTER TABLE snapshots ADD COLUMN invalid_devices TEXT;
  `,
  // 3: delivery per simplified-sliding-sync connection (MSC4186 `conn_id`). `pending` keeps
  // the device's rows, delivered and acknowledged by classic /sync; each connection that asked
  // for the e2ee extension gets rows of its own, delivered and acknowledged independently.
  // added_at lets a device's own rows expire once only its connections read them (rows from
  // before this migration count from the migration).
  `
  CREATE TABLE sliding_conns (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    conn_id   TEXT NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id)
  );
  CREATE INDEX sliding_conns_last_seen ON sliding_conns (last_seen);
  CREATE TABLE sliding_pending (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    conn_id    TEXT NOT NULL,
    target     TEXT NOT NULL,
    carried_in TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id, target)
  );
  ALTER TABLE pending ADD COLUMN added_at INTEGER NOT NULL DEFAULT 0;
  UPDATE pending SET added_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000;
  `,
  // 4: the homeserver's view of remote users (delivery/hs-view.ts): what it last served for
  // them, compact (device ids and keys, cross-signing public keys) as one JSON value per user.
  // Rows of users no device tracks any more are deleted with the trackers.
  `
  CREATE TABLE hs_views (
    user_id TEXT PRIMARY KEY,
    body    TEXT NOT NULL,
    seen_at INTEGER NOT NULL
  );
  `,
  // 5: the retry lease (Store.claimDueRetries): who runs a due retry, and until when.
  `
  ALTER TABLE retries ADD COLUMN holder TEXT;
  ALTER TABLE retries ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
  `,
  // 6: carried_in holds the suffix of ours (`.mrp_` and 12 characters, delivery/tokens.ts) that
  // an answer's position ends with, booked before the answer goes out, rather than the whole
  // position, booked after it: existing entries keep their last 17 characters, that suffix.
  `
  UPDATE pending SET carried_in = (SELECT json_group_array(substr(value, -17)) FROM json_each(pending.carried_in))
    WHERE carried_in <> '[]';
  UPDATE sliding_pending
    SET carried_in = (SELECT json_group_array(substr(value, -17)) FROM json_each(sliding_pending.carried_in))
    WHERE carried_in <> '[]';
  `,
  // 7: what started a refresh that failed (resync/resync-types.ts Trigger), so its retry is counted
  // under the same trigger; NULL on entries written before (explicit refreshes: "endpoint").
  `
  ALTER TABLE retries ADD COLUMN heal_trigger TEXT;
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export function schemaVersion(db: SqlDatabase): number {
  const row = db.prepare("PRAGMA user_version").get();
  return Number(row?.["user_version"] ?? 0);
}

/**
 * Applies the missing migrations, each in its own IMMEDIATE transaction: the write lock is
 * taken before the version is re-read, so two processes opening the same file at once
 * cannot both apply a migration. Returns the versions before and after.
 */
export function migrate(db: SqlDatabase): { from: number; to: number } {
  const from = schemaVersion(db);
  if (from > SCHEMA_VERSION) {
    // A newer build wrote this file; running old code on it could corrupt its meaning.
    throw new Error(`store schema version ${from} is newer than this build supports (${SCHEMA_VERSION})`);
  }
  for (let v = from; v < SCHEMA_VERSION; v++) {
    writeTransaction(db, () => {
      if (schemaVersion(db) !== v) return; // another process got here first
      db.exec(MIGRATIONS[v] as string);
      // user_version cannot be a bound parameter; v + 1 is an integer we computed.
      db.exec(`PRAGMA user_version = ${v + 1}`);
    });
  }
  return { from, to: schemaVersion(db) };
}
