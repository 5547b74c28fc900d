// Pending deliveries on PostgreSQL: the device's rows (`pending`, classic /sync) and each
// sliding-sync connection's (`sliding_pending`, MSC4186 conn_id). Same semantics as the SQLite
// store (store.ts has the contract). carried_in is a text[]: acknowledging is `token = ANY(...)`.
import type { Sql } from "postgres";
import { textList } from "./rows.ts";
import type { PendingDelivery } from "./store.ts";

type Target = { userId: string; deviceId: string; target: string };

export class PgDeliveries {
  readonly #sql: Sql;

  constructor(sql: Sql) {
    this.#sql = sql;
  }

  async add(rows: Target[], now: number, keep = false): Promise<void> {
    // One row per (device, target): an upsert may not touch a row twice in one statement.
    const unique = [...new Map(rows.map((r) => [`${r.userId}\u0000${r.deviceId}\u0000${r.target}`, r])).values()];
    if (unique.length === 0) return;
    const json = JSON.stringify(unique.map((r) => ({ u: r.userId, d: r.deviceId, t: r.target })));
    await this.#sql.begin(async (tx) => {
      const rows = tx`json_to_recordset(${json}::text::json)`;
      await tx`
        INSERT INTO pending (user_id, device_id, target, carried_in, added_at)
        SELECT u, d, t, '{}', ${now} FROM ${rows} AS r(u text, d text, t text)
        ON CONFLICT (user_id, device_id, target) DO ${keep ? tx`NOTHING` : tx`UPDATE SET carried_in = '{}', added_at = excluded.added_at`}`;
      await tx`
        INSERT INTO sliding_pending (user_id, device_id, conn_id, target, carried_in)
        SELECT c.user_id, c.device_id, c.conn_id, r.t, '{}'
        FROM ${rows} AS r(u text, d text, t text) JOIN sliding_conns c ON c.user_id = r.u AND c.device_id = r.d
        ON CONFLICT (user_id, device_id, conn_id, target) DO ${keep ? tx`NOTHING` : tx`UPDATE SET carried_in = '{}'`}`;
    });
  }

  async of(userId: string, deviceId: string, conn?: string): Promise<PendingDelivery[]> {
    const rows =
      conn === undefined
        ? await this.#sql`SELECT target, array_to_json(carried_in)::text AS carried FROM pending
            WHERE user_id = ${userId} AND device_id = ${deviceId} ORDER BY seq`
        : await this.#sql`SELECT target, array_to_json(carried_in)::text AS carried FROM sliding_pending
            WHERE user_id = ${userId} AND device_id = ${deviceId} AND conn_id = ${conn} ORDER BY seq`;
    return rows.map((r) => ({ target: String(r.target), carriedIn: JSON.parse(String(r.carried)) as string[] }));
  }

  async has(userId: string, deviceId: string, conn?: string): Promise<boolean> {
    const rows =
      conn === undefined
        ? await this.#sql`SELECT 1 FROM pending WHERE user_id = ${userId} AND device_id = ${deviceId} LIMIT 1`
        : await this.#sql`SELECT 1 FROM sliding_pending
            WHERE user_id = ${userId} AND device_id = ${deviceId} AND conn_id = ${conn} LIMIT 1`;
    return rows.length > 0;
  }

  async markCarried(
    userId: string,
    deviceId: string,
    targets: string[],
    token: string,
    keep: number,
    conn?: string,
  ): Promise<void> {
    if (targets.length === 0) return;
    // The token goes last (a repeated one moves there rather than crowding out older ones), and
    // the last `keep` stay. Rows acknowledged meanwhile are simply not there to update.
    const carried = this.#sql`(
      SELECT coalesce(array_agg(x ORDER BY o), '{}') FROM (
        SELECT x, o FROM unnest(array_remove(carried_in, ${token}::text) || ${token}::text) WITH ORDINALITY AS u(x, o)
        ORDER BY o DESC LIMIT ${keep}) s)`;
    const list = textList(this.#sql, targets);
    if (conn === undefined)
      await this.#sql`UPDATE pending SET carried_in = ${carried}
        WHERE user_id = ${userId} AND device_id = ${deviceId} AND target = ANY(${list})`;
    else
      await this.#sql`UPDATE sliding_pending SET carried_in = ${carried}
        WHERE user_id = ${userId} AND device_id = ${deviceId} AND conn_id = ${conn} AND target = ANY(${list})`;
  }

  async ack(userId: string, deviceId: string, token: string, conn?: string): Promise<number> {
    const r =
      conn === undefined
        ? await this.#sql`DELETE FROM pending
            WHERE user_id = ${userId} AND device_id = ${deviceId} AND ${token}::text = ANY(carried_in)`
        : await this.#sql`DELETE FROM sliding_pending
            WHERE user_id = ${userId} AND device_id = ${deviceId} AND conn_id = ${conn} AND ${token}::text = ANY(carried_in)`;
    return r.count;
  }

  async openConn(userId: string, deviceId: string, conn: string, now: number, keep: number): Promise<void> {
    await this.#sql.begin(async (tx) => {
      const seen = await tx`UPDATE sliding_conns SET last_seen = ${now}
        WHERE user_id = ${userId} AND device_id = ${deviceId} AND conn_id = ${conn}`;
      if (seen.count > 0) return;
      // Another replica may be opening the same connection: whoever inserts it copies the rows.
      const added = await tx`INSERT INTO sliding_conns (user_id, device_id, conn_id, last_seen)
        VALUES (${userId}, ${deviceId}, ${conn}, ${now}) ON CONFLICT DO NOTHING`;
      if (added.count === 0) return;
      await tx`INSERT INTO sliding_pending (user_id, device_id, conn_id, target, carried_in)
        SELECT user_id, device_id, ${conn}, target, '{}' FROM pending
        WHERE user_id = ${userId} AND device_id = ${deviceId} ORDER BY seq
        ON CONFLICT DO NOTHING`;
      // A client choosing conn_ids at will must not grow the table without bound: a device
      // keeps its `keep` most recently seen connections.
      const stale = (
        await tx`SELECT conn_id FROM sliding_conns WHERE user_id = ${userId} AND device_id = ${deviceId}
          ORDER BY last_seen DESC, seq DESC OFFSET ${keep}`
      ).map((r) => String(r.conn_id));
      if (stale.length === 0) return;
      await tx`DELETE FROM sliding_pending
        WHERE user_id = ${userId} AND device_id = ${deviceId} AND conn_id = ANY(${textList(tx, stale)})`;
      await tx`DELETE FROM sliding_conns
        WHERE user_id = ${userId} AND device_id = ${deviceId} AND conn_id = ANY(${textList(tx, stale)})`;
    });
  }

  async expireConns(olderThan: number): Promise<number> {
    return this.#sql.begin(async (tx) => {
      let n = 0;
      n += (
        await tx`DELETE FROM sliding_pending p USING sliding_conns c
          WHERE c.last_seen < ${olderThan} AND c.user_id = p.user_id AND c.device_id = p.device_id
            AND c.conn_id = p.conn_id`
      ).count;
      n += (await tx`DELETE FROM sliding_conns WHERE last_seen < ${olderThan}`).count;
      n += (
        await tx`DELETE FROM pending p WHERE added_at < ${olderThan} AND EXISTS (SELECT 1 FROM sliding_conns c
          WHERE c.user_id = p.user_id AND c.device_id = p.device_id)`
      ).count;
      return n;
    }) as Promise<number>;
  }
}
