// `migrate-store --from sqlite:DIR --to postgres://…`: moves a deployment's durable state into
// PostgreSQL (docs/deployment.md "PostgreSQL"): snapshots, the homeserver's views, trackers,
// pending deliveries with their sliding-sync connections, retries and destination backoff. One
// transaction on the target; then the rows of each table are counted on both sides. A target
// that already holds state is refused unless --existing-target replace (which empties it
// first). The proxy must be stopped meanwhile: rows it wrote after the copy would be lost.
import { join } from "node:path";
import type { Config } from "../config/config.ts";
import { openPostgresStore, redactUrl } from "../store/postgres.ts";
import { describeLocation, storeLocation } from "../store/open.ts";
import { openSqliteStore, STORE_FILE } from "../store/sqlite.ts";
import { openSqliteDatabase, type SqlDatabase } from "../store/sqlite-driver.ts";
import { COPIED_TABLES, copyTable, countRows } from "./migrate-tables.ts";

type Out = (line: string) => void;

export async function runMigrateStore(
  config: Config,
  out: Out = (l) => void process.stdout.write(`${l}\n`),
): Promise<number> {
  // Both are required for this command (config/options.ts).
  const from = storeLocation(config.from ?? "", config.dataDir);
  const to = storeLocation(config.to ?? "", config.dataDir);
  if (from.kind !== "sqlite" || to.kind !== "postgres") {
    out(
      `migrate-store: copies from sqlite:DIR to postgres://…, not ${describeLocation(from)} to ${describeLocation(to)}`,
    );
    return 2;
  }
  // Opened as the proxy would (its schema brought up to this build's), then read directly.
  await (await openSqliteStore(from.dir)).close();
  const source: SqlDatabase = await openSqliteDatabase(join(from.dir, STORE_FILE), { readonly: true });
  const target = await openPostgresStore(to.url, { max: 2 });
  try {
    const sql = target.sql;
    const before = await countRows(sql);
    const held = Object.values(before).reduce((a, b) => a + b, 0);
    if (held > 0 && config.existingTarget !== "replace") {
      out(
        `migrate-store: ${redactUrl(to.url)} already holds state (${held} rows); refusing to mix two deployments' state (--existing-target replace empties it first)`,
      );
      return 1;
    }
    out(`migrate-store: ${describeLocation(from)} -> ${redactUrl(to.url)}`);
    const copied: Record<string, number> = {};
    await sql.begin(async (tx) => {
      if (held > 0) await tx.unsafe(`TRUNCATE ${COPIED_TABLES.join(", ")}`);
      for (const t of COPIED_TABLES) copied[t] = await copyTable(source, tx, t);
    });
    const after = await countRows(sql);
    let ok = true;
    for (const t of COPIED_TABLES) {
      const inSource = Number(source.prepare(`SELECT count(*) AS n FROM ${t}`).get()?.["n"]);
      const same = inSource === copied[t] && copied[t] === after[t];
      ok &&= same;
      out(
        `  ${t.padEnd(16)} ${String(inSource).padStart(9)} in source ${String(after[t]).padStart(9)} in target${same ? "" : "  MISMATCH"}`,
      );
    }
    out(ok ? "migrate-store: counts verified" : "migrate-store: COUNTS DIFFER: do not start the proxy on the target");
    return ok ? 0 : 1;
  } finally {
    source.close();
    await target.close();
  }
}
