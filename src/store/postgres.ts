// The shared Store: a PostgreSQL database every replica uses (--database postgres://…).
// Connecting, the schema and start-up checks live here; the queries live in postgres-store.ts.
// The `postgres` client reconnects by itself: a database that goes away and comes back needs
// no restart of ours (store-guard.ts bounds each call meanwhile; pg-pool.ts replaces a pool
// whose sessions the restart left dead).
import { resettablePool } from "./pg-pool.ts";
import { migratePostgres, PG_SCHEMA_VERSION, pgSchemaVersion } from "./pg-migrations.ts";
import { PostgresStore } from "./postgres-store.ts";

export interface PostgresStoreOptions {
  /** Connections in the pool. Default 10. */
  max?: number;
  /** Open without migrating (migrate-store's source, tools): the schema must be this build's. */
  noMigrate?: boolean;
}

const oneLine = (e: unknown): string => (e instanceof Error ? e.message : String(e)).replace(/\s+/g, " ");

/** The URL without its password, for messages and logs. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)([^/?#@:]*)(:[^/?#@]*)?@/i, (_m, scheme, user, pw) =>
    pw ? `${scheme}${user}:<redacted>@` : `${scheme}${user}@`,
  );
}

/** Connects, migrates the schema and proves a write; errors are one line. */
export async function openPostgresStore(url: string, opts: PostgresStoreOptions = {}): Promise<PostgresStore> {
  let pool: ReturnType<typeof resettablePool>;
  try {
    checkUrl(url);
    pool = newPool(url, opts);
  } catch (e) {
    // The client parses the URL as it is made (a bad port, a bad %-escape).
    throw new InvalidDatabaseUrl(`store: ${redactUrl(url)} is not a valid PostgreSQL URL: ${oneLine(e)}`);
  }
  const sql = pool.sql;
  try {
    if (opts.noMigrate) {
      const v = await pgSchemaVersion(sql);
      if (v !== PG_SCHEMA_VERSION) throw new Error(`schema version ${v}, this build needs ${PG_SCHEMA_VERSION}`);
    } else await migratePostgres(sql);
    const store = new PostgresStore(sql, pool);
    if (!opts.noMigrate) await store.ping(); // prove at start-up that the database takes writes
    return store;
  } catch (e) {
    await sql.end({ timeout: 1 }).catch(() => {});
    // The cause keeps the client's error code (SQLSTATE, ECONNREFUSED): serve's start-up tells
    // an outage from a refusal by it (commands/pg-start.ts).
    throw new Error(`store: ${redactUrl(url)} is not usable: ${oneLine(e)}`, { cause: e });
  }
}

/** --database is not a URL the client can use: no wait makes it one. */
export class InvalidDatabaseUrl extends Error {}

// The client (4.x) only finds a bad port when it connects, and then as a connection error like
// any outage: a URL that can never work must refuse the start instead (commands/pg-start.ts).
export function checkUrl(url: string): void {
  // Not WHATWG URL: it refuses what the client takes (several hosts, no host with ?host=/socket).
  const m = /^(postgres|postgresql):\/\/([^/?#]*)/i.exec(url);
  if (!m) throw new Error("the scheme is not postgres:// or postgresql://");
  const hosts = m[2]!.slice(m[2]!.lastIndexOf("@") + 1);
  for (const host of hosts.split(",")) {
    const port = /:([^:\]]*)$/.exec(host)?.[1];
    if (port !== undefined && port !== "" && !(/^\d+$/.test(port) && +port >= 1 && +port <= 65535))
      throw new Error(`port ${port} is not a port number`);
  }
}

function newPool(url: string, opts: PostgresStoreOptions) {
  return resettablePool(url, {
    max: opts.max ?? 10,
    // A database that cannot be reached fails the call rather than queueing it for 30 s;
    // the guard's own deadline is shorter still on the request path.
    connect_timeout: 5,
    // Idle connections go (a replica at rest holds none); each lives at most 30 minutes, so a
    // failover behind a DNS name is picked up.
    idle_timeout: 60,
    max_lifetime: 30 * 60,
    onnotice: () => {},
    // Lists travel as JSON (rows.ts textList), so no array types are fetched: that query, run
    // as each connection opens, rejects unhandled when the server goes away meanwhile.
    fetch_types: false,
    // Reconnect attempts back off to at most a second (the client's default grows to 20 s): a
    // database back from a restart is used again within a second, not after a long wait.
    backoff: (attempts: number) => Math.min(0.05 * 2 ** attempts, 1),
    // Our queries use bigint for epoch milliseconds; the store converts them (rows.ts).
    connection: { application_name: "matrix-resync-proxy" },
  });
}
