// A tiny synchronous SQLite surface shared by Bun (`bun:sqlite`) and Deno (`node:sqlite`).
// The store only needs exec / prepare / run / get / all, so we adapt both runtimes to that
// and nothing more. Each runtime's module is loaded with a *literal* dynamic import inside a
// runtime check: neither runtime evaluates the other's module, and `bun build --compile`
// still sees the literal "bun:sqlite" specifier (it is a runtime built-in, always present).

export type SqlValue = string | number | null;
export type SqlRow = Record<string, SqlValue>;

export interface SqlStatement {
  run(...params: SqlValue[]): { changes: number };
  get(...params: SqlValue[]): SqlRow | undefined;
  all(...params: SqlValue[]): SqlRow[];
}

export interface SqlDatabase {
  readonly driver: "bun:sqlite" | "node:sqlite";
  exec(sql: string): void;
  /** Prepared statements are cached per SQL text: the store reuses a fixed set of queries. */
  prepare(sql: string): SqlStatement;
  close(): void;
}

export interface SqlOpenOptions {
  readonly?: boolean;
}

// The structural subset of both statement classes we rely on. Bun returns `null` from get()
// for "no row", node:sqlite returns `undefined`; `changes` may be a bigint on node:sqlite.
interface RawStatement {
  run(...params: SqlValue[]): { changes: number | bigint };
  get(...params: SqlValue[]): unknown;
  all(...params: SqlValue[]): unknown[];
}
interface RawDatabase {
  exec(sql: string): void;
  prepare(sql: string): RawStatement;
  close(): void;
}

function wrap(raw: RawDatabase, driver: SqlDatabase["driver"]): SqlDatabase {
  const cache = new Map<string, SqlStatement>();
  return {
    driver,
    exec: (sql) => raw.exec(sql),
    prepare(sql) {
      let st = cache.get(sql);
      if (st === undefined) {
        const r = raw.prepare(sql);
        st = {
          run: (...p) => ({ changes: Number(r.run(...p).changes) }),
          get: (...p) => (r.get(...p) ?? undefined) as SqlRow | undefined,
          all: (...p) => r.all(...p) as SqlRow[],
        };
        cache.set(sql, st);
      }
      return st;
    },
    close() {
      cache.clear();
      raw.close();
    },
  };
}

function isBun(): boolean {
  return typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
}

/** Opens (and, unless readonly, creates) the SQLite file at `path` with the runtime's driver. */
export async function openSqliteDatabase(path: string, opts: SqlOpenOptions = {}): Promise<SqlDatabase> {
  const readonly = opts.readonly === true;
  if (isBun()) {
    const { Database } = await import("bun:sqlite");
    // strict: bind positional parameters exactly and throw on missing ones.
    const db = readonly
      ? new Database(path, { readonly: true, strict: true })
      : new Database(path, { readwrite: true, create: true, strict: true });
    return wrap(db as unknown as RawDatabase, "bun:sqlite");
  }
  const { DatabaseSync } = await import("node:sqlite");
  const db = new DatabaseSync(path, { readOnly: readonly });
  return wrap(db as unknown as RawDatabase, "node:sqlite");
}

/**
 * Runs fn in a write transaction and commits. IMMEDIATE takes the write lock up front, so a
 * busy wait happens before any work and a read-then-write inside fn cannot deadlock.
 */
export function writeTransaction<T>(db: SqlDatabase, fn: () => T): T {
  db.exec("BEGIN IMMEDIATE");
  try {
    const result = fn();
    db.exec("COMMIT");
    return result;
  } catch (e) {
    try {
      db.exec("ROLLBACK");
    } catch {
      // SQLite may already have rolled back (e.g. on SQLITE_FULL); keep the original error.
    }
    throw e;
  }
}
