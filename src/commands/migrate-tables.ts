// migrate-store's table copy: each SQLite table's rows, in their own order (rowid: the order
// pending rows are delivered in, and the retries' tie-break), into the PostgreSQL table of the
// same name (src/store/pg-migrations.ts), in batches sent as one JSON parameter each.
import type { Sql, TransactionSql } from "postgres";
import type { SqlDatabase } from "../store/sqlite-driver.ts";

/** Column: name, its PostgreSQL type in the JSON record, and how the value is stored. */
type Column = [name: string, type: "text" | "bigint" | "integer", expr?: string];

// carried_in is a JSON array in SQLite and a text[] in PostgreSQL. A claimed retry's lease is
// not copied: whoever held it is gone.
const TABLES: Record<string, Column[]> = {
  snapshots: [
    ["user_id", "text"],
    ["stream_id", "bigint"],
    ["devices", "text"],
    ["master_key", "text"],
    ["self_signing_key", "text"],
    ["fetched_at", "bigint"],
    ["invalid_devices", "text"],
  ],
  hs_views: [
    ["user_id", "text"],
    ["body", "text"],
    ["seen_at", "bigint"],
  ],
  trackers: [
    ["target", "text"],
    ["user_id", "text"],
    ["device_id", "text"],
    ["server_name", "text"],
    ["last_seen", "bigint"],
  ],
  pending: [
    ["user_id", "text"],
    ["device_id", "text"],
    ["target", "text"],
    ["carried_in", "text", "ARRAY(SELECT json_array_elements_text(r.carried_in::json))"],
    ["added_at", "bigint"],
  ],
  sliding_conns: [
    ["user_id", "text"],
    ["device_id", "text"],
    ["conn_id", "text"],
    ["last_seen", "bigint"],
  ],
  sliding_pending: [
    ["user_id", "text"],
    ["device_id", "text"],
    ["conn_id", "text"],
    ["target", "text"],
    ["carried_in", "text", "ARRAY(SELECT json_array_elements_text(r.carried_in::json))"],
  ],
  retries: [
    ["user_id", "text"],
    ["attempts", "integer"],
    ["due_at", "bigint"],
    ["requested_by", "text"],
    ["last_error", "text"],
    ["heal_trigger", "text"],
  ],
  backoffs: [
    ["destination", "text"],
    ["failures", "integer"],
    ["retry_at", "bigint"],
    ["last_probe_at", "bigint"],
  ],
};

export const COPIED_TABLES = Object.keys(TABLES);

const BATCH = 1000;

/** Copies one table; returns how many rows went in. */
export async function copyTable(source: SqlDatabase, tx: TransactionSql, table: string): Promise<number> {
  const cols = TABLES[table]!;
  const names = cols.map(([n]) => n).join(", ");
  const record = cols.map(([n, t]) => `${n} ${t}`).join(", ");
  const exprs = cols.map(([n, , e]) => e ?? `r.${n}`).join(", ");
  const rows = source.prepare(`SELECT ${names} FROM ${table} ORDER BY rowid`).all();
  let n = 0;
  for (let i = 0; i < rows.length; i += BATCH) {
    const batch = JSON.stringify(rows.slice(i, i + BATCH));
    // Table and column names come from the fixed list above, never from input.
    const r = await tx.unsafe(
      `INSERT INTO ${table} (${names}) SELECT ${exprs} FROM json_to_recordset($1::text::json) AS r(${record})`,
      [batch],
    );
    n += r.count;
  }
  return n;
}

/** Rows in each copied table of the target. */
export async function countRows(sql: Sql): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of COPIED_TABLES) out[t] = Number((await sql.unsafe(`SELECT count(*) AS n FROM ${t}`))[0]?.n);
  return out;
}
