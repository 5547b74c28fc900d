// The PostgreSQL cluster's own sessions, separate from the store's, so a long lease or a burst
// of notifications never queues behind the store's statements, and the listening session is
// never lent out.
import postgres from "postgres";
import { type ResettablePool, resettablePool } from "../store/pg-pool.ts";

export interface ClusterSessions {
  /** Statements: rate-limit takes, peeks, notifications, the sweep. */
  statements: ResettablePool;
  /** Leases and slots only. */
  leases: ResettablePool;
  /** The one listening session. */
  listen: postgres.Sql;
}

export interface SessionOptions {
  url: string;
  /** Named in pg_stat_activity as `mrp-<role> <holder>`. */
  holder: string;
  deadlineMs: number;
  poolSize: number;
  onnotify: (channel: string, payload: string) => void;
  onclose: () => void;
}

export function openSessions(o: SessionOptions): ClusterSessions {
  const common = {
    onnotice: () => {},
    connect_timeout: Math.ceil(o.deadlineMs / 1000),
    // Reconnect attempts back off to at most a second, as the store's do (store/postgres.ts):
    // the client's default grows to 20 s, and every refresh takes a shared rate-limit token
    // here, so a replica answered 503 for that long after the database was back.
    backoff: (attempts: number) => Math.min(0.05 * 2 ** attempts, 1),
  };
  // Named in pg_stat_activity (63 bytes at most), so an operator or a test tells them apart.
  const named = (role: string) => ({ connection: { application_name: `mrp-${role} ${o.holder}`.slice(0, 63) } });
  const statements = resettablePool(o.url, { ...common, ...named("cluster"), max: o.poolSize });
  // Leases and slots get sessions of their own: a storm's per-request statements (a rate-limit
  // take per refresh) would otherwise queue the few lease statements past the deadline, and a
  // whole replica's joiners of one fetch would answer 503 with the database healthy. Their
  // number is bounded by the targets in flight (joiners share one flight per replica).
  // No array types to fetch (their statements take none): that query, run as each connection
  // opens, rejects unhandled when the server goes away meanwhile, and the audit's lease
  // (pg-lease.ts) opens one every few seconds whatever the traffic.
  const leases = resettablePool(o.url, { ...common, ...named("lease"), max: o.poolSize, fetch_types: false });
  const listen = postgres(o.url, {
    ...common,
    ...named("bus"),
    max: 1,
    idle_timeout: 0,
    max_lifetime: null,
    onnotify: o.onnotify,
    onclose: o.onclose,
  } as postgres.Options<Record<string, postgres.PostgresType>>);
  return { statements, leases, listen };
}
