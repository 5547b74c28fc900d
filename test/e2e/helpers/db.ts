// Reading and editing a stopped Synapse's SQLite database. Goes through the venv's Python
// (its sqlite3 module) so it works the same under Bun and Deno. Synapse caches much of its
// database in memory: edit only while that homeserver is stopped.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { venvPython } from "../../../scripts/homeservers/layout.ts";

const run = promisify(execFile);

export interface SqlStatement {
  sql: string;
  params?: (string | number | null)[];
}

const script = `
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
out = []
for st in json.loads(sys.argv[2]):
    cur = db.execute(st["sql"], st.get("params") or [])
    out.append({"rows": cur.fetchall(), "changes": cur.rowcount})
db.commit()
print(json.dumps(out))
`;

export interface SqlResult {
  rows: unknown[][];
  /** Rows changed by an INSERT/UPDATE/DELETE; -1 for a SELECT. */
  changes: number;
}

/** Runs the statements in one transaction and returns one result per statement. */
export async function sqlite(dbPath: string, statements: SqlStatement[]): Promise<SqlResult[]> {
  const { stdout } = await run(venvPython, ["-c", script, dbPath, JSON.stringify(statements)]);
  return JSON.parse(stdout) as SqlResult[];
}
