// Cluster.peek on PostgreSQL: the lease rows (pg-flight.ts) of the keys a replica asks about at
// once, read in one statement. A storm of refreshes of many users misses this replica's cache
// together, and a statement per refresh queued on the few sessions would hold up the rate-limit
// takes behind them (pg-limiter.ts batches those the same way); asks of one key share its read.
import type postgres from "postgres";
import type { Landed } from "./cluster.ts";
import type { LeaseRow } from "./pg-flight.ts";
import type { Guard } from "./pg-guard.ts";

const READ_MANY = `SELECT key, holder IS NOT NULL AND expires_at > clock_timestamp() AS held,
    GREATEST(0, EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000)::float8 AS wait_ms,
    (EXTRACT(EPOCH FROM clock_timestamp() - landed_at) * 1000)::float8 AS landed_ago_ms, ok, result
  FROM cluster_flights WHERE key IN (SELECT json_array_elements_text($1::json))`;

// A batch this large is still one short statement.
const MAX_BATCH = 500;

type Waiter = { resolve(row: LeaseRow | undefined): void; reject(e: unknown): void };

export class LeasePeeks {
  readonly #sql: postgres.Sql;
  readonly #guard: Guard;
  // Keys waiting for the next statement, each with its askers; one statement runs at a time.
  #queue = new Map<string, Waiter[]>();
  #running = false;

  constructor(sql: postgres.Sql, guard: Guard) {
    this.#sql = sql;
    this.#guard = guard;
  }

  /** An outcome that landed within freshMs, `running` while a lease is held, else undefined. */
  async peek(key: string, freshMs: number): Promise<Landed | "running" | undefined> {
    const row = await this.#read(key);
    if (!row) return undefined;
    if (row.held) return "running";
    if (row.landed_ago_ms !== null && row.landed_ago_ms <= freshMs && row.result !== null)
      return { ok: row.ok === true, result: row.result };
    return undefined;
  }

  #read(key: string): Promise<LeaseRow | undefined> {
    return new Promise((resolve, reject) => {
      const waiters = this.#queue.get(key);
      if (waiters) waiters.push({ resolve, reject });
      else this.#queue.set(key, [{ resolve, reject }]);
      if (!this.#running) {
        this.#running = true;
        queueMicrotask(() => void this.#drain());
      }
    });
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.size > 0) {
        const batch = new Map<string, Waiter[]>();
        for (const [k, ws] of this.#queue) {
          if (batch.size >= MAX_BATCH) break;
          batch.set(k, ws);
        }
        for (const k of batch.keys()) this.#queue.delete(k);
        await this.#run(batch);
      }
    } finally {
      this.#running = false;
    }
  }

  async #run(batch: Map<string, Waiter[]>): Promise<void> {
    try {
      const rows = await this.#guard("single-flight peek", () =>
        // A json parameter: the client serialises the array itself.
        this.#sql.unsafe<(LeaseRow & { key: string })[]>(READ_MANY, [[...batch.keys()] as unknown as string]),
      );
      const byKey = new Map(rows.map((r) => [r.key, r]));
      for (const [k, ws] of batch) for (const w of ws) w.resolve(byKey.get(k));
    } catch (e) {
      for (const ws of batch.values()) for (const w of ws) w.reject(e);
    }
  }
}
