// A named lease one replica at a time holds (cluster.ts SharedLease): a row of cluster_leases
// with an expiry and the holder's state. The holder renews it every third of its length (a
// claim, or a save with each step of its work); a replica that stops releases it, so another
// takes it at its next claim; a killed one's lease expires, and another takes it within a lease
// and a third. No notification: a claim every third of a lease is all the waiting there is.
import type { SharedLease } from "./cluster.ts";
import type { LeaseDeps } from "./pg-flight.ts";

// Taken when free, expired or ours already (a renewal): one statement, and the state with it.
const CLAIM = `INSERT INTO cluster_leases AS l (name, holder, expires_at)
  VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3::float8 / 1000))
  ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
  WHERE l.holder = excluded.holder OR l.holder IS NULL OR l.expires_at <= clock_timestamp()
  RETURNING state`;

const SAVE = `UPDATE cluster_leases SET state = $3, expires_at = clock_timestamp() + make_interval(secs => $4::float8 / 1000)
  WHERE name = $1 AND holder = $2 RETURNING 1`;

const RELEASE = `UPDATE cluster_leases SET holder = NULL, expires_at = clock_timestamp() WHERE name = $1 AND holder = $2`;

export class PgLease implements SharedLease {
  readonly #d: LeaseDeps;
  readonly #name: string;
  readonly claimEveryMs: number;

  constructor(d: LeaseDeps, name: string) {
    this.#d = d;
    this.#name = name;
    this.claimEveryMs = Math.max(50, d.leaseMs / 3);
  }

  async claim(): Promise<{ state: string | null } | false> {
    const d = this.#d;
    const rows = await d.guard("lease", () =>
      d.sql.unsafe<{ state: string | null }[]>(CLAIM, [this.#name, d.holder, d.leaseMs]),
    );
    return rows.length > 0 ? { state: rows[0]!.state } : false;
  }

  async save(state: string): Promise<boolean> {
    const d = this.#d;
    const rows = await d.guard("lease", () => d.sql.unsafe(SAVE, [this.#name, d.holder, state, d.leaseMs]));
    return rows.length > 0;
  }

  async release(): Promise<void> {
    const d = this.#d;
    await d.guard("lease", () => d.sql.unsafe(RELEASE, [this.#name, d.holder]));
  }
}
