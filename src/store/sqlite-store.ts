// SQL for each Store method. Instances are made by openSqliteStore (sqlite.ts), which has
// already configured the connection and migrated the schema. The driver is synchronous: each
// method does its work at once and returns a settled promise (a throw becomes a rejection).

import { type SqlDatabase, type SqlRow, writeTransaction } from "./sqlite-driver.ts";
import { CARRIED_KEEP, CONNS_KEEP, fromRetryRow, fromSnapshotRow, num, snapshotColumns } from "./rows.ts";
import type { Backoff, PendingDelivery, RetryEntry, Store } from "./store.ts";
import type { DeviceSnapshot } from "../matrix/device.ts";
import { serverOf } from "../matrix/user-id.ts";
import type { HsView } from "../matrix/device.ts";

const str = (v: unknown): string => String(v);

function toBackoff(r: SqlRow): Backoff {
  return {
    destination: str(r["destination"]),
    failures: num(r["failures"]),
    retryAt: num(r["retry_at"]),
    lastProbeAt: num(r["last_probe_at"]),
  };
}

export class SqliteStore implements Store {
  #db: SqlDatabase;
  #closed = false;

  constructor(db: SqlDatabase) {
    this.#db = db;
  }

  #q(sql: string) {
    return this.#db.prepare(sql);
  }

  #tx(fn: () => void): void {
    writeTransaction(this.#db, fn);
  }

  async getSnapshot(userId: string) {
    const r = this.#q("SELECT * FROM snapshots WHERE user_id = ?").get(userId);
    return r ? fromSnapshotRow(r) : undefined;
  }
  async putSnapshot(s: DeviceSnapshot) {
    const c = snapshotColumns(s);
    this.#q(
      `INSERT OR REPLACE INTO snapshots (user_id, stream_id, devices, master_key, self_signing_key, fetched_at, invalid_devices)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ).run(c.userId, c.streamId, c.devices, c.masterKey, c.selfSigningKey, c.fetchedAt, c.invalidDevices);
  }
  async deleteSnapshot(userId: string) {
    this.#q("DELETE FROM snapshots WHERE user_id = ?").run(userId);
  }
  async listSnapshotUsers() {
    return this.#q("SELECT user_id FROM snapshots ORDER BY user_id")
      .all()
      .map((r) => str(r["user_id"]));
  }

  async getBackoff(destination: string) {
    const r = this.#q("SELECT * FROM backoffs WHERE destination = ?").get(destination);
    return r ? toBackoff(r) : undefined;
  }
  async putBackoff(b: Backoff) {
    this.#q("INSERT OR REPLACE INTO backoffs (destination, failures, retry_at, last_probe_at) VALUES (?, ?, ?, ?)").run(
      b.destination,
      b.failures,
      b.retryAt,
      b.lastProbeAt,
    );
  }
  async clearBackoff(destination: string) {
    this.#q("DELETE FROM backoffs WHERE destination = ?").run(destination);
  }
  async listBackoffs() {
    return this.#q("SELECT * FROM backoffs ORDER BY destination").all().map(toBackoff);
  }

  async putRetry(r: RetryEntry) {
    // ON CONFLICT DO UPDATE (not REPLACE) keeps the rowid, our tie-break for equal dueAt. A
    // rescheduled entry is nobody's until it is due again: the lease goes with the upsert.
    this.#q(
      `INSERT INTO retries (user_id, attempts, due_at, requested_by, last_error, heal_trigger) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (user_id) DO UPDATE SET attempts = excluded.attempts, due_at = excluded.due_at,
         requested_by = excluded.requested_by, last_error = excluded.last_error,
         heal_trigger = excluded.heal_trigger, holder = NULL, lease_until = 0`,
    ).run(r.userId, r.attempts, r.dueAt, JSON.stringify(r.requestedBy), r.lastError ?? null, r.trigger ?? null);
  }
  async getRetry(userId: string) {
    const r = this.#q("SELECT * FROM retries WHERE user_id = ?").get(userId);
    return r ? fromRetryRow(r) : undefined;
  }
  async deleteRetry(userId: string) {
    this.#q("DELETE FROM retries WHERE user_id = ?").run(userId);
  }
  async dueRetries(now: number, limit: number) {
    return this.#q("SELECT * FROM retries WHERE due_at <= ? ORDER BY due_at, rowid LIMIT ?")
      .all(now, Math.max(0, Math.trunc(limit)))
      .map(fromRetryRow);
  }
  async claimDueRetries(now: number, limit: number, holder: string, leaseMs: number) {
    // One process holds the file: a transaction is all the exclusion claiming needs here.
    const due = this.#q("SELECT * FROM retries WHERE due_at <= ? AND lease_until <= ? ORDER BY due_at, rowid LIMIT ?");
    const claim = this.#q("UPDATE retries SET holder = ?, lease_until = ? WHERE user_id = ?");
    let rows: SqlRow[] = [];
    this.#tx(() => {
      rows = due.all(now, now, Math.max(0, Math.trunc(limit)));
      for (const r of rows) claim.run(holder, now + leaseMs, str(r["user_id"]));
    });
    return rows.map(fromRetryRow);
  }
  async listRetries() {
    return this.#q("SELECT * FROM retries ORDER BY due_at, rowid").all().map(fromRetryRow);
  }
  async nextRetryAt() {
    // A claimed entry comes round again when its lease ends, not while it runs.
    const v = this.#q("SELECT min(max(due_at, lease_until)) AS m FROM retries").get()?.["m"];
    return v === null || v === undefined ? undefined : num(v);
  }

  async addPending(rows: { userId: string; deviceId: string; target: string }[], now = Date.now(), keep = false) {
    const st = this.#q(
      `INSERT INTO pending (user_id, device_id, target, carried_in, added_at) VALUES (?, ?, ?, '[]', ?)
       ON CONFLICT (user_id, device_id, target) DO ${keep ? "NOTHING" : "UPDATE SET carried_in = '[]', added_at = excluded.added_at"}`,
    );
    const conns = this.#q(
      `INSERT INTO sliding_pending (user_id, device_id, conn_id, target, carried_in)
         SELECT user_id, device_id, conn_id, ?, '[]' FROM sliding_conns WHERE user_id = ? AND device_id = ?
       ON CONFLICT (user_id, device_id, conn_id, target) DO ${keep ? "NOTHING" : "UPDATE SET carried_in = '[]'"}`,
    );
    this.#tx(() =>
      rows.forEach((r) => {
        st.run(r.userId, r.deviceId, r.target, now);
        conns.run(r.target, r.userId, r.deviceId);
      }),
    );
  }
  async pendingFor(userId: string, deviceId: string, conn?: string): Promise<PendingDelivery[]> {
    const rows =
      conn === undefined
        ? this.#q("SELECT target, carried_in FROM pending WHERE user_id = ? AND device_id = ? ORDER BY rowid").all(
            userId,
            deviceId,
          )
        : this.#q(
            "SELECT target, carried_in FROM sliding_pending WHERE user_id = ? AND device_id = ? AND conn_id = ? ORDER BY rowid",
          ).all(userId, deviceId, conn);
    return rows.map((r) => ({ target: str(r["target"]), carriedIn: JSON.parse(str(r["carried_in"])) as string[] }));
  }
  async hasPending(userId: string, deviceId: string, conn?: string) {
    return conn === undefined
      ? this.#q("SELECT 1 AS x FROM pending WHERE user_id = ? AND device_id = ? LIMIT 1").get(userId, deviceId) !==
          undefined
      : this.#q("SELECT 1 AS x FROM sliding_pending WHERE user_id = ? AND device_id = ? AND conn_id = ? LIMIT 1").get(
          userId,
          deviceId,
          conn,
        ) !== undefined;
  }
  async markCarried(userId: string, deviceId: string, targets: string[], token: string, conn?: string) {
    const [table, extra] = conn === undefined ? ["pending", ""] : ["sliding_pending", " AND conn_id = ?"];
    const keys = conn === undefined ? [userId, deviceId] : [userId, deviceId, conn];
    const read = this.#q(`SELECT carried_in FROM ${table} WHERE user_id = ? AND device_id = ?${extra} AND target = ?`);
    const write = this.#q(
      `UPDATE ${table} SET carried_in = ? WHERE user_id = ? AND device_id = ?${extra} AND target = ?`,
    );
    this.#tx(() => {
      for (const t of targets) {
        const r = read.get(...keys, t);
        if (!r) continue; // acknowledged meanwhile: nothing left to carry
        // A repeated token moves to the end rather than crowding out older ones.
        const carried = (JSON.parse(str(r["carried_in"])) as string[]).filter((x) => x !== token);
        carried.push(token);
        write.run(JSON.stringify(carried.slice(-CARRIED_KEEP)), ...keys, t);
      }
    });
  }
  async ackToken(userId: string, deviceId: string, token: string, conn?: string) {
    if (conn !== undefined) {
      return this.#q(
        `DELETE FROM sliding_pending WHERE user_id = ? AND device_id = ? AND conn_id = ?
           AND EXISTS (SELECT 1 FROM json_each(sliding_pending.carried_in) WHERE value = ?)`,
      ).run(userId, deviceId, conn, token).changes;
    }
    return this.#q(
      `DELETE FROM pending WHERE user_id = ? AND device_id = ?
         AND EXISTS (SELECT 1 FROM json_each(pending.carried_in) WHERE value = ?)`,
    ).run(userId, deviceId, token).changes;
  }
  async openConn(userId: string, deviceId: string, conn: string, now: number) {
    const seen = this.#q("UPDATE sliding_conns SET last_seen = ? WHERE user_id = ? AND device_id = ? AND conn_id = ?");
    this.#tx(() => {
      if (seen.run(now, userId, deviceId, conn).changes > 0) return;
      this.#q("INSERT INTO sliding_conns (user_id, device_id, conn_id, last_seen) VALUES (?, ?, ?, ?)").run(
        userId,
        deviceId,
        conn,
        now,
      );
      this.#q(
        `INSERT OR IGNORE INTO sliding_pending (user_id, device_id, conn_id, target, carried_in)
           SELECT user_id, device_id, ?, target, '[]' FROM pending WHERE user_id = ? AND device_id = ? ORDER BY rowid`,
      ).run(conn, userId, deviceId);
      // A client choosing conn_ids at will must not grow the table without bound: a device
      // keeps its CONNS_KEEP most recently seen connections (Element X has one with e2ee).
      const stale = this.#q(
        `SELECT conn_id FROM sliding_conns WHERE user_id = ? AND device_id = ?
           ORDER BY last_seen DESC, rowid DESC LIMIT -1 OFFSET ?`,
      )
        .all(userId, deviceId, CONNS_KEEP)
        .map((r) => str(r["conn_id"]));
      for (const c of stale) {
        this.#q("DELETE FROM sliding_pending WHERE user_id = ? AND device_id = ? AND conn_id = ?").run(
          userId,
          deviceId,
          c,
        );
        this.#q("DELETE FROM sliding_conns WHERE user_id = ? AND device_id = ? AND conn_id = ?").run(
          userId,
          deviceId,
          c,
        );
      }
    });
  }
  async expireConns(olderThan: number) {
    let n = 0;
    this.#tx(() => {
      n += this.#q(
        `DELETE FROM sliding_pending WHERE EXISTS (SELECT 1 FROM sliding_conns c WHERE c.last_seen < ?
           AND c.user_id = sliding_pending.user_id AND c.device_id = sliding_pending.device_id AND c.conn_id = sliding_pending.conn_id)`,
      ).run(olderThan).changes;
      n += this.#q("DELETE FROM sliding_conns WHERE last_seen < ?").run(olderThan).changes;
      n += this.#q(
        `DELETE FROM pending WHERE added_at < ? AND EXISTS (SELECT 1 FROM sliding_conns c
           WHERE c.user_id = pending.user_id AND c.device_id = pending.device_id)`,
      ).run(olderThan).changes;
    });
    return n;
  }
  async countPending() {
    return num(this.#q("SELECT count(*) AS n FROM pending").get()?.["n"]);
  }

  async track(userId: string, deviceId: string, targets: string[], now: number, maxNew = Infinity) {
    // Refresh first, insert only what is new: the caller's cap counts rows added, not touched.
    const touch = this.#q("UPDATE trackers SET last_seen = ? WHERE target = ? AND user_id = ? AND device_id = ?");
    const add = this.#q(
      "INSERT INTO trackers (target, user_id, device_id, server_name, last_seen) VALUES (?, ?, ?, ?, ?)",
    );
    let added = 0;
    let refused = 0;
    this.#tx(() => {
      for (const t of targets) {
        if (touch.run(now, t, userId, deviceId).changes > 0) continue;
        if (added >= maxNew) refused++;
        else {
          add.run(t, userId, deviceId, serverOf(t), now);
          added++;
        }
      }
    });
    return { added, refused };
  }
  async trackerCounts() {
    return this.#q("SELECT user_id, device_id, count(*) AS n FROM trackers GROUP BY user_id, device_id")
      .all()
      .map((r) => ({ userId: str(r["user_id"]), deviceId: str(r["device_id"]), count: num(r["n"]) }));
  }
  async trackersOf(target: string) {
    return this.#q("SELECT user_id, device_id FROM trackers WHERE target = ? ORDER BY user_id, device_id")
      .all(target)
      .map((r) => ({ userId: str(r["user_id"]), deviceId: str(r["device_id"]) }));
  }
  async trackedUsersOn(serverName: string) {
    return this.#q("SELECT DISTINCT target FROM trackers WHERE server_name = ? ORDER BY target")
      .all(serverName)
      .map((r) => str(r["target"]));
  }
  async expireTrackers(olderThan: number) {
    let n = 0;
    this.#tx(() => {
      n = this.#q("DELETE FROM trackers WHERE last_seen < ?").run(olderThan).changes;
      // The view is kept only while some device tracks the user: it expires with the trackers.
      if (n > 0) this.#q("DELETE FROM hs_views WHERE user_id NOT IN (SELECT target FROM trackers)").run();
    });
    return n;
  }
  async trackedTargetsAfter(after: string, limit: number) {
    return this.#q("SELECT DISTINCT target FROM trackers WHERE target > ? ORDER BY target LIMIT ?")
      .all(after, Math.max(0, Math.trunc(limit)))
      .map((r) => str(r["target"]));
  }
  async countTrackedTargets() {
    return num(this.#q("SELECT count(DISTINCT target) AS n FROM trackers").get()?.["n"]);
  }

  async getView(userId: string): Promise<HsView | undefined> {
    const r = this.#q("SELECT body, seen_at FROM hs_views WHERE user_id = ?").get(userId);
    if (!r) return undefined;
    const b = JSON.parse(str(r["body"])) as { d: HsView["devices"]; m?: string; s?: string };
    const v: HsView = { userId, devices: b.d, seenAt: num(r["seen_at"]) };
    if (b.m !== undefined) v.master = b.m;
    if (b.s !== undefined) v.selfSigning = b.s;
    return v;
  }
  async putView(v: HsView) {
    await this.putViews([v]);
  }
  async putViews(vs: readonly HsView[]) {
    if (vs.length === 0) return;
    const st = this.#q("INSERT OR REPLACE INTO hs_views (user_id, body, seen_at) VALUES (?, ?, ?)");
    this.#tx(() => {
      for (const v of vs) st.run(v.userId, JSON.stringify({ d: v.devices, m: v.master, s: v.selfSigning }), v.seenAt);
    });
  }
  async countViews() {
    return num(this.#q("SELECT count(*) AS n FROM hs_views").get()?.["n"]);
  }

  async ping() {
    this.#q("INSERT INTO heartbeat (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at").run(
      Date.now(),
    );
  }
  async close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#db.close();
  }
}
