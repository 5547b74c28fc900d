// A token bucket in PostgreSQL: the refill computed under the row lock so that concurrent takes
// from any replica are serialised. Same arithmetic as RateLimiter. The takes a replica makes at
// once go in one statement (one key at most once in it): a storm of 1,000 requesters each taking
// in a statement of its own queued on a few sessions past the deadline, and answered 503.
import type postgres from "postgres";
import type { BucketSpec, SharedLimiter } from "./cluster.ts";

// clock_timestamp(), not now(): the time the row lock was obtained, so `at` never goes back.
const REFILL = "LEAST($3::float8, b.tokens + GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - b.at)) * $4::float8)";
// Keys in sorted order, so two replicas' batches lock the rows they share in the same order.
const TAKE = `INSERT INTO cluster_buckets AS b (name, key, tokens, at, granted)
  SELECT $1, k.key, $3::float8 - 1, clock_timestamp(), true
  FROM json_array_elements_text($2::json) WITH ORDINALITY AS k(key, n) ORDER BY k.n
  ON CONFLICT (name, key) DO UPDATE SET
    tokens = ${REFILL} - CASE WHEN ${REFILL} >= 1 THEN 1 ELSE 0 END,
    granted = ${REFILL} >= 1,
    at = clock_timestamp()
  RETURNING key, tokens, granted`;

// A batch this large is still one short statement.
const MAX_BATCH = 500;

interface Waiter {
  resolve(wait: number): void;
  reject(e: unknown): void;
}

export class PgLimiter implements SharedLimiter {
  readonly #sql: postgres.Sql;
  readonly #name: string;
  readonly #spec: BucketSpec;
  readonly #guard: <T>(op: string, call: () => Promise<T>) => Promise<T>;
  // Takes waiting for the next statement, in arrival order; one statement runs at a time.
  #queue: { key: string; w: Waiter }[] = [];
  #running = false;

  constructor(
    sql: postgres.Sql,
    name: string,
    spec: BucketSpec,
    guard: <T>(op: string, call: () => Promise<T>) => Promise<T>,
  ) {
    this.#sql = sql;
    this.#name = name;
    this.#spec = spec;
    this.#guard = guard;
  }

  take(key: string): Promise<number> {
    const p = new Promise<number>((resolve, reject) => this.#queue.push({ key, w: { resolve, reject } }));
    if (!this.#running) {
      this.#running = true;
      queueMicrotask(() => void this.#drain());
    }
    return p;
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        // Each key once per statement (ON CONFLICT cannot touch a row twice): repeats wait.
        const batch = new Map<string, Waiter>();
        const rest: { key: string; w: Waiter }[] = [];
        for (const t of this.#queue) {
          if (batch.has(t.key) || batch.size >= MAX_BATCH) rest.push(t);
          else batch.set(t.key, t.w);
        }
        this.#queue = rest;
        await this.#run(batch);
      }
    } finally {
      this.#running = false;
    }
  }

  async #run(batch: Map<string, Waiter>): Promise<void> {
    const { burst, perSecond } = this.#spec;
    const keys = [...batch.keys()].sort();
    try {
      const rows = await this.#guard("rate limit", () =>
        this.#sql.unsafe<{ key: string; tokens: number; granted: boolean }[]>(TAKE, [
          this.#name,
          // A json parameter: the client serialises the array itself.
          keys as unknown as string,
          burst,
          perSecond,
        ]),
      );
      for (const r of rows) {
        const w = batch.get(r.key);
        batch.delete(r.key);
        w?.resolve(r.granted ? 0 : Math.max(1, Math.ceil(((1 - r.tokens) / perSecond) * 1000)));
      }
      for (const w of batch.values()) w.reject(new Error("rate limit: no row returned"));
    } catch (e) {
      for (const w of batch.values()) w.reject(e);
    }
  }
}
