// SQL for each Store method on PostgreSQL, shared by every replica (docs/architecture.md
// "Durable state"). Instances are made by openPostgresStore (postgres.ts), which has migrated
// the schema. Same semantics as sqlite-store.ts, method by method; the tests run both.
import type { Sql } from "postgres";
import type { DeviceSnapshot, HsView } from "../matrix/device.ts";
import { serverOf } from "../matrix/user-id.ts";
import { CARRIED_KEEP, CONNS_KEEP, fromRetryRow, fromSnapshotRow, num, snapshotColumns, textList } from "./rows.ts";
import type { Backoff, PendingDelivery, RetryEntry, Store } from "./store.ts";
import { PgDeliveries } from "./postgres-pending.ts";
import { endedByServer, type ResettablePool, sessionLost } from "./pg-pool.ts";

type Row = Record<string, unknown>;

const toBackoff = (r: Row): Backoff => ({
  destination: String(r.destination),
  failures: num(r.failures),
  retryAt: num(r.retry_at),
  lastProbeAt: num(r.last_probe_at),
});

export class PostgresStore implements Store {
  readonly #sql: Sql;
  readonly #pending: PgDeliveries;
  readonly #pool: ResettablePool | undefined;
  #closed: Promise<void> | undefined;

  /** `pool`: `sql` is its handle, and recover() may replace the pool behind it. */
  constructor(sql: Sql, pool?: ResettablePool) {
    this.#sql = sql;
    this.#pool = pool;
    this.#pending = new PgDeliveries(sql);
  }

  /**
   * After a failed call (store-guard.ts): when the failure says its session is gone, or the call
   * was not answered in time, the pool is replaced (pg-pool.ts). True when the statement
   * certainly did not run, so the guard may send it again once, on the new pool.
   */
  recover(e: unknown, timedOut: boolean): boolean {
    if (!this.#pool || this.#closed || !sessionLost(e, timedOut)) return false;
    this.#pool.reset();
    return !timedOut && endedByServer(e);
  }

  /** The connection pool itself: for migrate-store's bulk copy, never the request path. */
  get sql(): Sql {
    return this.#sql;
  }

  async getSnapshot(userId: string) {
    const [r] = await this.#sql`SELECT * FROM snapshots WHERE user_id = ${userId}`;
    return r ? fromSnapshotRow(r) : undefined;
  }
  async putSnapshot(s: DeviceSnapshot) {
    const c = snapshotColumns(s);
    await this.#sql`
      INSERT INTO snapshots (user_id, stream_id, devices, master_key, self_signing_key, fetched_at, invalid_devices)
      VALUES (${c.userId}, ${c.streamId}, ${c.devices}, ${c.masterKey}, ${c.selfSigningKey}, ${c.fetchedAt}, ${c.invalidDevices})
      ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, devices = excluded.devices,
        master_key = excluded.master_key, self_signing_key = excluded.self_signing_key,
        fetched_at = excluded.fetched_at, invalid_devices = excluded.invalid_devices`;
  }
  async deleteSnapshot(userId: string) {
    await this.#sql`DELETE FROM snapshots WHERE user_id = ${userId}`;
  }
  async listSnapshotUsers() {
    return (await this.#sql`SELECT user_id FROM snapshots ORDER BY user_id`).map((r) => String(r.user_id));
  }

  async getBackoff(destination: string) {
    const [r] = await this.#sql`SELECT * FROM backoffs WHERE destination = ${destination}`;
    return r ? toBackoff(r) : undefined;
  }
  async putBackoff(b: Backoff) {
    await this.#sql`
      INSERT INTO backoffs (destination, failures, retry_at, last_probe_at)
      VALUES (${b.destination}, ${b.failures}, ${b.retryAt}, ${b.lastProbeAt})
      ON CONFLICT (destination) DO UPDATE SET failures = excluded.failures, retry_at = excluded.retry_at,
        last_probe_at = excluded.last_probe_at`;
  }
  async clearBackoff(destination: string) {
    await this.#sql`DELETE FROM backoffs WHERE destination = ${destination}`;
  }
  async listBackoffs() {
    return (await this.#sql`SELECT * FROM backoffs ORDER BY destination`).map(toBackoff);
  }

  async putRetry(r: RetryEntry) {
    // A rescheduled entry is nobody's until it is due again: the lease goes with the upsert.
    await this.#sql`
      INSERT INTO retries (user_id, attempts, due_at, requested_by, last_error, heal_trigger)
      VALUES (${r.userId}, ${r.attempts}, ${r.dueAt}, ${JSON.stringify(r.requestedBy)}, ${r.lastError ?? null},
        ${r.trigger ?? null})
      ON CONFLICT (user_id) DO UPDATE SET attempts = excluded.attempts, due_at = excluded.due_at,
        requested_by = excluded.requested_by, last_error = excluded.last_error,
        heal_trigger = excluded.heal_trigger, holder = NULL, lease_until = 0`;
  }
  async getRetry(userId: string) {
    const [r] = await this.#sql`SELECT * FROM retries WHERE user_id = ${userId}`;
    return r ? fromRetryRow(r) : undefined;
  }
  async deleteRetry(userId: string) {
    await this.#sql`DELETE FROM retries WHERE user_id = ${userId}`;
  }
  async dueRetries(now: number, limit: number) {
    const n = Math.max(0, Math.trunc(limit));
    return (await this.#sql`SELECT * FROM retries WHERE due_at <= ${now} ORDER BY due_at, seq LIMIT ${n}`).map(
      fromRetryRow,
    );
  }
  async claimDueRetries(now: number, limit: number, holder: string, leaseMs: number) {
    const n = Math.max(0, Math.trunc(limit));
    // SKIP LOCKED: replicas claiming at the same moment each take rows the others did not, and
    // never wait on each other; a lease still running is another replica's (or an earlier
    // claim of ours, whose fetch is still going).
    const rows = await this.#sql`
      WITH due AS (
        SELECT user_id FROM retries WHERE due_at <= ${now} AND lease_until <= ${now}
        ORDER BY due_at, seq LIMIT ${n} FOR UPDATE SKIP LOCKED
      )
      UPDATE retries r SET holder = ${holder}, lease_until = ${now + leaseMs}
      FROM due WHERE r.user_id = due.user_id
      RETURNING r.*`;
    return rows.sort((a, b) => num(a.due_at) - num(b.due_at) || num(a.seq) - num(b.seq)).map(fromRetryRow);
  }
  async listRetries() {
    return (await this.#sql`SELECT * FROM retries ORDER BY due_at, seq`).map(fromRetryRow);
  }
  async nextRetryAt() {
    // A claimed entry comes round again when its lease ends, not while it runs.
    const [r] = await this.#sql`SELECT min(greatest(due_at, lease_until)) AS m FROM retries`;
    return r?.m === null || r?.m === undefined ? undefined : num(r.m);
  }

  addPending(rows: { userId: string; deviceId: string; target: string }[], now = Date.now(), keep = false) {
    return this.#pending.add(rows, now, keep);
  }
  pendingFor(userId: string, deviceId: string, conn?: string): Promise<PendingDelivery[]> {
    return this.#pending.of(userId, deviceId, conn);
  }
  hasPending(userId: string, deviceId: string, conn?: string) {
    return this.#pending.has(userId, deviceId, conn);
  }
  markCarried(userId: string, deviceId: string, targets: string[], token: string, conn?: string) {
    return this.#pending.markCarried(userId, deviceId, targets, token, CARRIED_KEEP, conn);
  }
  ackToken(userId: string, deviceId: string, token: string, conn?: string) {
    return this.#pending.ack(userId, deviceId, token, conn);
  }
  openConn(userId: string, deviceId: string, conn: string, now: number) {
    return this.#pending.openConn(userId, deviceId, conn, now, CONNS_KEEP);
  }
  expireConns(olderThan: number) {
    return this.#pending.expireConns(olderThan);
  }
  async countPending() {
    return num((await this.#sql`SELECT count(*) AS n FROM pending`)[0]?.n);
  }

  async track(userId: string, deviceId: string, targets: string[], now: number, maxNew = Infinity) {
    if (targets.length === 0) return { added: 0, refused: 0 };
    return this.#sql.begin(async (tx) => {
      // Refresh first, insert only what is new: the caller's cap counts rows added, not touched.
      const touched = await tx`
        UPDATE trackers SET last_seen = ${now}
        WHERE user_id = ${userId} AND device_id = ${deviceId} AND target = ANY(${textList(tx, targets)})
        RETURNING target`;
      const had = new Set(touched.map((r) => String(r.target)));
      const fresh = [...new Set(targets.filter((t) => !had.has(t)))];
      const take = fresh.slice(0, Number.isFinite(maxNew) ? Math.max(0, maxNew) : fresh.length);
      if (take.length > 0) {
        const rows = take.map((t) => ({
          target: t,
          user_id: userId,
          device_id: deviceId,
          server_name: serverOf(t),
          last_seen: now,
        }));
        // A replica tracking the same pair at the same moment: its row stands, ours is a refresh.
        await tx`INSERT INTO trackers ${tx(rows)} ON CONFLICT (target, user_id, device_id) DO UPDATE SET last_seen = excluded.last_seen`;
      }
      return { added: take.length, refused: fresh.length - take.length };
    }) as Promise<{ added: number; refused: number }>;
  }
  async trackerCounts() {
    return (await this.#sql`SELECT user_id, device_id, count(*) AS n FROM trackers GROUP BY user_id, device_id`).map(
      (r) => ({ userId: String(r.user_id), deviceId: String(r.device_id), count: num(r.n) }),
    );
  }
  async trackersOf(target: string) {
    return (
      await this.#sql`SELECT user_id, device_id FROM trackers WHERE target = ${target} ORDER BY user_id, device_id`
    ).map((r) => ({ userId: String(r.user_id), deviceId: String(r.device_id) }));
  }
  async trackedUsersOn(serverName: string) {
    return (
      await this.#sql`SELECT DISTINCT target FROM trackers WHERE server_name = ${serverName} ORDER BY target`
    ).map((r) => String(r.target));
  }
  async expireTrackers(olderThan: number) {
    return this.#sql.begin(async (tx) => {
      const n = (await tx`DELETE FROM trackers WHERE last_seen < ${olderThan}`).count;
      // The view is kept only while some device tracks the user: it expires with the trackers.
      if (n > 0)
        await tx`DELETE FROM hs_views v WHERE NOT EXISTS (SELECT 1 FROM trackers t WHERE t.target = v.user_id)`;
      return n;
    }) as Promise<number>;
  }
  async trackedTargetsAfter(after: string, limit: number) {
    const n = Math.max(0, Math.trunc(limit));
    return (
      await this.#sql`SELECT DISTINCT target FROM trackers WHERE target > ${after} ORDER BY target LIMIT ${n}`
    ).map((r) => String(r.target));
  }
  async countTrackedTargets() {
    return num((await this.#sql`SELECT count(DISTINCT target) AS n FROM trackers`)[0]?.n);
  }

  async getView(userId: string): Promise<HsView | undefined> {
    const [r] = await this.#sql`SELECT body, seen_at FROM hs_views WHERE user_id = ${userId}`;
    if (!r) return undefined;
    const b = JSON.parse(String(r.body)) as { d: HsView["devices"]; m?: string; s?: string };
    const v: HsView = { userId, devices: b.d, seenAt: num(r.seen_at) };
    if (b.m !== undefined) v.master = b.m;
    if (b.s !== undefined) v.selfSigning = b.s;
    return v;
  }
  putView(v: HsView) {
    return this.putViews([v]);
  }
  async putViews(vs: readonly HsView[]) {
    if (vs.length === 0) return;
    // One row per user: a batch naming a user twice keeps the last (as SQLite's REPLACE does).
    const last = new Map(vs.map((v) => [v.userId, v]));
    const rows = [...last.values()].map((v) => ({
      user_id: v.userId,
      body: JSON.stringify({ d: v.devices, m: v.master, s: v.selfSigning }),
      seen_at: v.seenAt,
    }));
    await this.#sql`INSERT INTO hs_views ${this.#sql(rows)}
      ON CONFLICT (user_id) DO UPDATE SET body = excluded.body, seen_at = excluded.seen_at`;
  }
  async countViews() {
    return num((await this.#sql`SELECT count(*) AS n FROM hs_views`)[0]?.n);
  }

  async ping() {
    await this.#sql`INSERT INTO heartbeat (id, at) VALUES (1, ${Date.now()})
      ON CONFLICT (id) DO UPDATE SET at = excluded.at`;
  }
  close() {
    // Waits for queries in flight, then closes every connection (at most 5 s).
    this.#closed ??= this.#sql.end({ timeout: 5 });
    return this.#closed;
  }
}
