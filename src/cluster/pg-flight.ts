// One fetch per key across replicas: a lease row per key with an expiry. The holder renews it
// while it runs, then writes the outcome into the row and notifies in the same statement, so a
// replica woken by the notification reads the outcome. A replica that finds the lease held waits
// for that notification, or for the expiry (its holder died: kill -9) and then takes over.
import type postgres from "postgres";
import type { Landed } from "./cluster.ts";

export interface LeaseDeps {
  sql: postgres.Sql;
  holder: string;
  leaseMs: number;
  channel: string;
  guard: <T>(op: string, call: () => Promise<T>) => Promise<T>;
  /**
   * Starts listening for a notification of `kind` for `id` now (before the read that decides to
   * wait, so one arriving in between is not missed); `wait` resolves on it or after `ms`.
   */
  watch(kind: string, id: string): { wait(ms: number): Promise<void>; cancel(): void };
}

const ACQUIRE = `INSERT INTO cluster_flights AS f (key, holder, expires_at)
  VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3::float8 / 1000))
  ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,
    landed_at = NULL, ok = NULL, result = NULL
  WHERE f.expires_at <= clock_timestamp()
    AND (f.landed_at IS NULL OR f.landed_at <= clock_timestamp() - make_interval(secs => $4::float8 / 1000))
  RETURNING 1`;

export interface LeaseRow {
  held: boolean;
  wait_ms: number;
  landed_ago_ms: number | null;
  ok: boolean | null;
  result: string | null;
}

const READ = `SELECT holder IS NOT NULL AND expires_at > clock_timestamp() AS held,
    GREATEST(0, EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000)::float8 AS wait_ms,
    (EXTRACT(EPOCH FROM clock_timestamp() - landed_at) * 1000)::float8 AS landed_ago_ms, ok, result
  FROM cluster_flights WHERE key = $1`;

// The outcome and the notification in one statement: committed together, so a woken replica
// always finds the outcome.
const LAND = `WITH landed AS (
    UPDATE cluster_flights SET holder = NULL, expires_at = clock_timestamp(), landed_at = clock_timestamp(),
      ok = $3, result = $4
    WHERE key = $1 AND holder = $2 RETURNING key)
  SELECT pg_notify($5, $6) FROM landed`;

const RENEW = `UPDATE cluster_flights SET expires_at = clock_timestamp() + make_interval(secs => $3::float8 / 1000)
  WHERE key = $1 AND holder = $2`;

/** Renew a lease every third of its length while `p` runs. */
export async function whileHeld<T>(p: Promise<T>, leaseMs: number, renew: () => Promise<unknown>): Promise<T> {
  const timer = setInterval(() => void renew().catch(() => {}), Math.max(50, leaseMs / 3));
  try {
    return await p;
  } finally {
    clearInterval(timer);
  }
}

export async function flight(
  d: LeaseDeps,
  key: string,
  run: () => Promise<Landed>,
  freshMs: number,
  wire: (kind: string, ids: string[]) => string,
): Promise<Landed> {
  const started = performance.now();
  let waited = false;
  for (;;) {
    // After waiting for another holder, its outcome is ours even when it is older than freshMs.
    const fresh = waited ? Math.max(freshMs, performance.now() - started + 1_000) : freshMs;
    const mine = await d.guard("single-flight lease", () => d.sql.unsafe(ACQUIRE, [key, d.holder, d.leaseMs, fresh]));
    if (mine.length > 0) {
      let landed: Landed;
      try {
        landed = await whileHeld(run(), d.leaseMs, () => d.sql.unsafe(RENEW, [key, d.holder, d.leaseMs]));
      } catch (e) {
        landed = { ok: false, result: String((e as Error)?.message ?? e) };
      }
      // A failure here leaves the lease to expire: the waiters then take over.
      await d
        .guard("single-flight outcome", () =>
          d.sql.unsafe(LAND, [key, d.holder, landed.ok, landed.result, d.channel, wire("l", [key])]),
        )
        .catch(() => {});
      return landed;
    }
    const watch = d.watch("l", key);
    try {
      const [row] = await d.guard("single-flight lease", () => d.sql.unsafe<LeaseRow[]>(READ, [key]));
      if (!row) continue; // swept between the two statements
      if (!row.held && row.landed_ago_ms !== null && row.landed_ago_ms <= fresh && row.result !== null)
        return { ok: row.ok === true, result: row.result };
      waited = true;
      // The holder's notification ends the wait; its lease's expiry does if it died.
      await watch.wait(row.held ? row.wait_ms + 20 : 20);
    } finally {
      watch.cancel();
    }
  }
}
