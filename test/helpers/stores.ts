// Both back ends of the Store for tests that must hold for each (docs/architecture.md "Durable
// state"): SQLite in a temp dir, PostgreSQL as a fresh database in one throw-away cluster per
// test file (test/helpers/postgres.ts; started on first use, ~1 s). Call closeTestStores in
// the file's afterAll.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore, storeLocation } from "../../src/store/open.ts";
import type { Store } from "../../src/store/store.ts";
import { postgresBinDir, startPostgres, type TestPostgres } from "./postgres.ts";

export type Backend = "sqlite" | "postgres";
export const BACKENDS: readonly Backend[] = ["sqlite", "postgres"];

let cluster: Promise<TestPostgres> | undefined;
let databases = 0;
const dirs: string[] = [];

/** This file's PostgreSQL cluster, started on first use. */
export function testPostgres(): Promise<TestPostgres> {
  cluster ??= startPostgres();
  return cluster;
}

/** Stops this file's cluster and deletes the SQLite stores made here (a file's afterAll). */
export async function closeTestStores(): Promise<void> {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  const c = cluster;
  cluster = undefined;
  if (c) await (await c).close();
}

/**
 * For useTestDatabase (test/helpers/proxy.ts): one database of this cluster per data dir, made
 * on first use, so a proxy restarted on the same data dir finds its state and another does not.
 */
export function databasePerDataDir(pg: TestPostgres): (dataDir: string) => string {
  const made = new Map<string, string>();
  return (dataDir) => {
    let url = made.get(dataDir);
    if (url === undefined) {
      const name = `d${process.pid}_${++databases}`;
      const r = spawnSync(
        join(postgresBinDir(), "psql"),
        ["-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "-qc", `CREATE DATABASE ${name}`],
        { encoding: "utf8" },
      );
      if (r.status !== 0) throw new Error(`CREATE DATABASE failed: ${r.stderr}`);
      url = pg.url.replace(/\/postgres$/, `/${name}`);
      made.set(dataDir, url);
    }
    return url;
  };
}

/** A --database value for a new, empty store of this kind. */
export async function freshDatabase(kind: Backend): Promise<string> {
  if (kind === "sqlite") {
    const d = mkdtempSync(join(tmpdir(), "store-test-"));
    dirs.push(d);
    return `sqlite:${d}`;
  }
  return (await testPostgres()).createDatabase(`t${process.pid}_${++databases}`);
}

/** Opens (and migrates) the store a --database value names. */
export function openDatabase(database: string): Promise<Store> {
  return openStore(storeLocation(database, ""));
}
