// At most `limit` fetches in flight per destination across replicas (the remote Synapse admits a
// few concurrent federation requests per origin): slot rows with an expiry, renewed while held,
// so a killed replica's slots free themselves.
import type { LeaseDeps } from "./pg-flight.ts";
import { whileHeld } from "./pg-flight.ts";

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

/** Resolves with the release once a slot is ours; `p`'s lifetime renews it (see `hold`). */
export async function slot(
  d: LeaseDeps,
  destination: string,
  limit: number,
  wire: (kind: string, ids: string[]) => string,
): Promise<() => void> {
  for (;;) {
    const watch = d.watch("s", destination);
    try {
      const rows = await d.guard(
        "destination slot",
        d.sql.unsafe<{ slot: number }[]>(ACQUIRE, [destination, d.holder, d.leaseMs, limit]),
      );
      const got = rows[0]?.slot;
      if (got !== undefined) {
        let release!: () => void;
        const held = new Promise<void>((r) => (release = r));
        void whileHeld(held, d.leaseMs, () => d.sql.unsafe(RENEW, [destination, got, d.holder, d.leaseMs])).then(() =>
          d.sql.unsafe(FREE, [destination, got, d.holder, d.channel, wire("s", [destination])]).catch(() => {}),
        );
        return release;
      }
      // A release anywhere wakes us; polling covers a holder that died (its slot expires).
      await watch.wait(Math.min(250, d.leaseMs));
    } finally {
      watch.cancel();
    }
  }
}
