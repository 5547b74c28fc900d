// A replica that finds a PostgreSQL schema newer than its build knows (a newer replica migrated
// the shared database, then an old one was started) refuses to start: exit 1 and exactly one
// line on stderr naming both versions, before it listens or changes anything.
import { chmodSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import postgres from "postgres";
import { PG_SCHEMA_VERSION, migratePostgres } from "../../src/store/pg-migrations.ts";
import { startPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { writeTestKey } from "../helpers/proxy.ts";
import { ensureBinary, run, RUNTIMES } from "./runtimes.ts";

let pg: TestPostgres;
let database: string;
let key: string;
const newer = PG_SCHEMA_VERSION + 1;

beforeAll(async () => {
  ensureBinary();
  key = writeTestKey();
  chmodSync(key, 0o600); // no warning about a readable key on stderr: the one line is the refusal
  pg = await startPostgres();
  database = await pg.createDatabase("newer");
  const sql = postgres(database, { max: 1, onnotice: () => {} });
  try {
    await migratePostgres(sql);
    await sql`UPDATE schema_version SET version = ${newer}`;
  } finally {
    await sql.end();
  }
}, 120_000);
afterAll(() => pg?.close());

describe.each(RUNTIMES)("$name", (rt) => {
  test("a newer schema_version on PostgreSQL: exit 1, one stderr line naming the versions, the schema untouched", async () => {
    const r = run(rt, [
      "--upstream",
      "http://127.0.0.1:1",
      "--server-name",
      "hs.test",
      "--signing-key",
      key,
      "--listen",
      "127.0.0.1:0",
      "--database",
      // The cluster trusts loopback, so the password is not checked; it must not be printed.
      database.replace("postgres://postgres@", "postgres://postgres:sekret@"),
    ]);
    expect(r.status).toBe(1);
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^matrix-resync-proxy: store: postgres:\/\/\S+ is not usable: /);
    expect(lines[0]).toContain(
      `store schema version ${newer} is newer than this build supports (${PG_SCHEMA_VERSION})`,
    );
    expect(lines[0]).not.toContain("sekret");
    const sql = postgres(database, { max: 1 });
    try {
      expect((await sql`SELECT version FROM schema_version`).map((x) => x.version)).toEqual([newer]);
    } finally {
      await sql.end();
    }
  }, 90_000);
});
