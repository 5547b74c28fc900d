// A `postgres` pool that can be swapped for a fresh one behind the same `Sql` handle. After a
// PostgreSQL restart, a session may be dead without the client knowing: the next statement on it
// fails with 57P01 "terminating connection due to administrator command", or is written to a
// dead socket and never answered (a session that died unheard: no FIN or RST reached us, as after
// a failover). Each such session cost a failed call (and the store guard's cool-down of 503s) up
// to idle_timeout after the restart (docs/scaling.md, "When something fails"). postgres 3.4.9
// also left such sessions behind itself (it kept a session's error across reconnects, and never
// connected again one whose transaction it had rolled back on the closed socket); 4.2.0 does
// neither, but nothing else notices a session that died unheard.
// On the first sign of one, every session of the pool is suspect: the pool is replaced, so the
// next call connects afresh.
import postgres from "postgres";

type Options = postgres.Options<Record<string, postgres.PostgresType>>;

/**
 * Server codes for a session the server ended (admin_shutdown, crash_shutdown,
 * cannot_connect_now): the statement was not committed (its transaction rolls back), so it may
 * be sent again on a new session.
 */
const ENDED_BY_SERVER = new Set(["57P01", "57P02", "57P03"]);
/** The client's codes for a session lost under a statement (it may or may not have run). */
const LOST = new Set(["CONNECTION_CLOSED", "CONNECTION_DESTROYED", "CONNECT_TIMEOUT", "ECONNRESET", "EPIPE"]);
// Failures in a burst (a database that is down fails every call) replace the pool once.
const MIN_RESET_GAP_MS = 250;

const codeOf = (e: unknown): string => String((e as { code?: unknown } | null)?.code ?? "");

/** The failure says the statement's session is gone (or never answered): the pool is suspect. */
export function sessionLost(e: unknown, timedOut: boolean): boolean {
  const code = codeOf(e);
  return timedOut || ENDED_BY_SERVER.has(code) || LOST.has(code);
}

/** The server ended the session before the statement committed: sending it again is safe. */
export function endedByServer(e: unknown): boolean {
  return ENDED_BY_SERVER.has(codeOf(e));
}

export interface ResettablePool {
  /** Always the current pool. */
  readonly sql: postgres.Sql;
  /** Replaces the pool; the old one finishes its statements in flight (1 s at most) and closes. */
  reset(): void;
  /** How many times the pool was replaced (tests, logs). */
  readonly resets: number;
}

export function resettablePool(url: string, options: Options, now: () => number = Date.now): ResettablePool {
  let current = postgres(url, options);
  let lastReset = -Infinity;
  let resets = 0;
  // Every method (begin, unsafe, end, …) and the tagged-template call go to the current pool.
  const sql = new Proxy(current, {
    apply: (_t, _this, args: unknown[]) => Reflect.apply(current as (...a: unknown[]) => unknown, undefined, args),
    get: (_t, key) => {
      const v = Reflect.get(current, key);
      return typeof v === "function" ? v.bind(current) : v;
    },
  });
  return {
    sql,
    get resets() {
      return resets;
    },
    reset() {
      const t = now();
      if (t - lastReset < MIN_RESET_GAP_MS) return;
      lastReset = t;
      resets++;
      const old = current;
      current = postgres(url, options);
      old.end({ timeout: 1 }).catch(() => {});
    },
  };
}
