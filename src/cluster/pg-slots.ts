// At most `limit` fetches in flight per destination across replicas (the remote Synapse admits a
// few concurrent federation requests per origin): slot rows with an expiry, renewed while held,
// so a killed replica's slots free themselves.
import type { LeaseDeps } from "./pg-flight.ts";

// The first slot number below the limit that is free or expired, in one statement. Two replicas
// choosing the same free number meet on the primary key: the second gets no row and looks again.
const ACQUIRE = `INSERT INTO cluster_slots AS s (destination, slot, holder, expires_at)
  SELECT $1, g, $2, clock_timestamp() + make_interval(secs => $3::float8 / 1000)
  FROM generate_series(0, $4::integer - 1) AS g
  WHERE NOT EXISTS (SELECT 1 FROM cluster_slots x
                    WHERE x.destination = $1 AND x.slot = g AND x.expires_at > clock_timestamp())
  LIMIT 1
  ON CONFLICT (destination, slot) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
  WHERE s.expires_at <= clock_timestamp()
  RETURNING slot`;

const FREE = `WITH freed AS (DELETE FROM cluster_slots WHERE destination = $1 AND slot = $2 AND holder = $3 RETURNING 1)
  SELECT pg_notify($4, $5) FROM freed`;

const RENEW = `UPDATE cluster_slots SET expires_at = clock_timestamp() + make_interval(secs => $4::float8 / 1000)
  WHERE destination = $1 AND slot = $2 AND holder = $3`;

// A slot this replica frees goes straight to its own next waiter, without a statement, this many
// times in a row; then it goes back to the database, where the other replicas' waiters have
// their turn (they are woken by its release).
const HANDOFFS = 16;

interface Waiter {
  resolve(release: () => void): void;
  reject(e: unknown): void;
}

/**
 * The slots of one replica. Its waiters for a destination queue here, and one of them at a time
 * asks the database: a storm of fetches to one destination costs a statement or two per fetch,
 * where every waiter asking again on every release cost their square (docs/scaling.md).
 */
export class PgSlots {
  readonly #d: LeaseDeps;
  readonly #wire: (kind: string, ids: string[]) => string;
  readonly #queues = new Map<string, Waiter[]>();
  readonly #seeking = new Set<string>();

  constructor(d: LeaseDeps, wire: (kind: string, ids: string[]) => string) {
    this.#d = d;
    this.#wire = wire;
  }

  /** Resolves with the release once a slot is ours; it is renewed until released. */
  slot(destination: string, limit: number): Promise<() => void> {
    let q = this.#queues.get(destination);
    if (!q) this.#queues.set(destination, (q = []));
    const p = new Promise<() => void>((resolve, reject) => q.push({ resolve, reject }));
    void this.#seek(destination, limit);
    return p;
  }

  async #seek(destination: string, limit: number): Promise<void> {
    if (this.#seeking.has(destination)) return;
    this.#seeking.add(destination);
    const d = this.#d;
    try {
      for (;;) {
        const q = this.#queues.get(destination);
        if (!q || q.length === 0) break;
        const watch = d.watch("s", destination);
        try {
          const rows = await d.guard("destination slot", () =>
            d.sql.unsafe<{ slot: number }[]>(ACQUIRE, [destination, d.holder, d.leaseMs, limit]),
          );
          const got = rows[0]?.slot;
          if (got !== undefined) {
            this.#hold(destination, got, limit);
            continue; // another may be free too
          }
          // A release anywhere wakes us; polling covers a holder that died (its slot expires).
          await watch.wait(Math.min(250, d.leaseMs));
        } finally {
          watch.cancel();
        }
      }
    } catch (e) {
      // The database failed: every waiter here would fail alike (StoreUnavailable).
      for (const w of this.#queues.get(destination)?.splice(0) ?? []) w.reject(e);
    } finally {
      this.#seeking.delete(destination);
      if (this.#queues.get(destination)?.length === 0) this.#queues.delete(destination);
    }
  }

  /** Slot `got` is ours: lent to our waiters in turn, renewed meanwhile, then freed. */
  #hold(destination: string, got: number, limit: number): void {
    const d = this.#d;
    const timer = setInterval(
      () => void d.sql.unsafe(RENEW, [destination, got, d.holder, d.leaseMs]).catch(() => {}),
      Math.max(50, d.leaseMs / 3),
    );
    const give = (lent: number) => {
      const q = this.#queues.get(destination);
      if (q && q.length > 0 && lent < HANDOFFS) {
        const w = q.shift()!;
        let done = false;
        w.resolve(() => {
          if (done) return;
          done = true;
          give(lent + 1);
        });
        return;
      }
      clearInterval(timer);
      void d.sql
        .unsafe(FREE, [destination, got, d.holder, d.channel, this.#wire("s", [destination])])
        .catch(() => {})
        .then(() => {
          if (this.#queues.get(destination)?.length) void this.#seek(destination, limit);
        });
    };
    give(0);
  }
}
