// The embedded Store: one SQLite file in --data-dir. Opening, pragmas and start-up checks
// live here; the queries live in sqlite-store.ts. See store.ts for the contract.

import { chmodSync, closeSync, mkdirSync, openSync, statSync } from "node:fs";
import { join } from "node:path";
import { migrate, SCHEMA_VERSION, schemaVersion } from "./migrations.ts";
import { openSqliteDatabase, type SqlDatabase } from "./sqlite-driver.ts";
import { SqliteStore } from "./sqlite-store.ts";
import type { Store } from "./store.ts";

export const STORE_FILE = "resync.sqlite3";

export interface SqliteStoreOptions {
  /** Open without write access (no migration, no mkdir); ping() then throws. */
  readonly?: boolean;
  /** How long a write waits for another connection's lock before failing. Default 50 (BUSY_TIMEOUT_MS). */
  busyTimeoutMs?: number;
}

// The busy wait blocks the whole event loop (the driver is synchronous), and store calls sit on
// the request path: a lock another process holds for long is a failure to fall back from
// (store-guard.ts), not something to wait out. Our own writes are one connection's, so they
// never wait on each other.
const BUSY_TIMEOUT_MS = 50;

const oneLine = (e: unknown): string => (e instanceof Error ? e.message : String(e)).replace(/\s+/g, " ");

/**
 * The database file exists with mode 0600 before SQLite opens it, and an older file is
 * tightened to 0600: SQLite creates the -wal and -shm files with the database file's own mode
 * (its unix VFS copies it), so they follow. The umask cannot widen a mode we set explicitly.
 */
function ownFiles(file: string): void {
  try {
    closeSync(openSync(file, "a", 0o600));
  } catch {
    return; // not creatable here: opening it below reports why, in one line
  }
  for (const f of [file, `${file}-wal`, `${file}-shm`]) {
    const st = statSync(f, { throwIfNoEntry: false });
    if (!st || (st.mode & 0o777) === 0o600) continue;
    try {
      chmodSync(f, 0o600);
    } catch {
      // Another user's file we may write but not chmod (a shared volume): the write check at
      // start-up still decides whether the store is usable.
    }
  }
}

/** Creates dataDir if missing and opens `${dataDir}/resync.sqlite3`; errors are one line. */
export async function openSqliteStore(dataDir: string, opts: SqliteStoreOptions = {}): Promise<Store> {
  const file = join(dataDir, STORE_FILE);
  const readonly = opts.readonly === true;
  try {
    // 0700: the directory holds who-tracks-whom metadata (which devices query which users).
    // An existing directory keeps the mode its operator gave it.
    if (!readonly) mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    if (!statSync(dataDir).isDirectory()) throw new Error("not a directory");
  } catch (e) {
    throw new Error(`store: data dir ${dataDir} is not usable: ${oneLine(e)}`);
  }
  if (statSync(file, { throwIfNoEntry: false })?.isDirectory()) {
    throw new Error(`store: ${file} is a directory, expected an SQLite file`);
  }
  if (!readonly) ownFiles(file);
  let db: SqlDatabase;
  try {
    db = await openSqliteDatabase(file, { readonly });
  } catch (e) {
    throw new Error(`store: cannot open ${file}: ${oneLine(e)}`);
  }
  try {
    // busy_timeout first: the pragmas below may already need a lock.
    const busy = opts.busyTimeoutMs ?? BUSY_TIMEOUT_MS;
    db.exec(`PRAGMA busy_timeout = ${Number.isFinite(busy) ? Math.max(0, Math.trunc(busy)) : BUSY_TIMEOUT_MS}`);
    if (readonly) {
      const v = schemaVersion(db);
      if (v !== SCHEMA_VERSION) throw new Error(`schema version ${v}, this build needs ${SCHEMA_VERSION}`);
    } else {
      // WAL: readers never block the writer, and a commit is one append to the log.
      db.exec("PRAGMA journal_mode = WAL");
      // FULL, not NORMAL: in WAL mode NORMAL survives a process kill but may lose the last
      // commits on power loss or OS crash. We answer clients only after committing (202 for
      // a refresh, a next_batch that carried an injection), so a commit must be on disk
      // then. The cost is one fsync per write transaction; our writes are few and small.
      db.exec("PRAGMA synchronous = FULL");
      migrate(db);
    }
    const store = new SqliteStore(db);
    if (!readonly) await store.ping(); // prove at start-up that the file really takes writes
    return store;
  } catch (e) {
    db.close();
    throw new Error(`store: ${file} is not usable: ${oneLine(e)}`);
  }
}
