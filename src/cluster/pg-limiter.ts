// A token bucket in PostgreSQL: one statement per take, the refill computed under the row lock
// so that concurrent takes from any replica are serialised. Same arithmetic as RateLimiter.
import type postgres from "postgres";
import type { BucketSpec, SharedLimiter } from "./cluster.ts";

// clock_timestamp(), not now(): the time the row lock was obtained, so `at` never goes back.
const REFILL = "LEAST($3::float8, b.tokens + GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - b.at)) * $4::float8)";
const TAKE = `INSERT INTO cluster_buckets AS b (name, key, tokens, at, granted)
  VALUES ($1, $2, $3::float8 - 1, clock_timestamp(), true)
  ON CONFLICT (name, key) DO UPDATE SET
    tokens = ${REFILL} - CASE WHEN ${REFILL} >= 1 THEN 1 ELSE 0 END,
    granted = ${REFILL} >= 1,
    at = clock_timestamp()
  RETURNING tokens, granted`;

export class PgLimiter implements SharedLimiter {
  readonly #sql: postgres.Sql;
  readonly #name: string;
  readonly #spec: BucketSpec;
  readonly #guard: <T>(op: string, p: Promise<T>) => Promise<T>;

  constructor(sql: postgres.Sql, name: string, spec: BucketSpec, guard: <T>(op: string, p: Promise<T>) => Promise<T>) {
    this.#sql = sql;
    this.#name = name;
    this.#spec = spec;
    this.#guard = guard;
  }

  async take(key: string): Promise<number> {
    const { burst, perSecond } = this.#spec;
    const rows = await this.#guard(
      "rate limit",
      this.#sql.unsafe<{ tokens: number; granted: boolean }[]>(TAKE, [this.#name, key, burst, perSecond]),
    );
    const r = rows[0]!;
    if (r.granted) return 0;
    return Math.max(1, Math.ceil(((1 - r.tokens) / perSecond) * 1000));
  }
}
