// Rows of the cluster's tables (made by the store's migrations, store/pg-migrations.ts) that
// nobody needs any more: expired leases, outcomes past any cache window, full buckets.
import type postgres from "postgres";

export async function sweep(sql: postgres.Sql): Promise<void> {
  await sql`DELETE FROM cluster_flights WHERE expires_at < now() - interval '1 hour'
              AND (landed_at IS NULL OR landed_at < now() - interval '1 hour')`;
  await sql`DELETE FROM cluster_slots WHERE expires_at < now() - interval '1 minute'`;
  await sql`DELETE FROM cluster_buckets WHERE at < now() - interval '1 hour'`;
}
