// Opening PostgreSQL at start-up (--database postgres://…). The database is not in the path of
// plain traffic, at start-up no more than later (docs/scaling.md, "Failures"): a replica that
// cannot reach it listens anyway and serves as during an outage (pass-through, /sync without
// injection, refreshes 503, /readyz failing on its store check), tries again in the background
// with a capped back-off, and becomes whole when the database answers. What waiting cannot cure
// (a bad URL, a refused login, a missing database, a newer schema) still refuses to start.
import type { Cluster } from "../cluster/cluster.ts";
import { LateCluster } from "../cluster/late-cluster.ts";
import { PgCluster } from "../cluster/pg-cluster.ts";
import type { Logger } from "../observe/log.ts";
import { lateStore } from "../store/late-store.ts";
import { NewerSchema } from "../store/pg-migrations.ts";
import { InvalidDatabaseUrl, openPostgresStore, redactUrl } from "../store/postgres.ts";
import type { Store } from "../store/store.ts";

export interface PgStart {
  /** The store to guard: the real one, or one failing every call until the database answers. */
  store: Store;
  cluster: Cluster;
  /** Runs `fn` once both are open: now, or when the database first answers. */
  whenOpen(fn: () => void): void;
  /** Stops trying (shutdown); a store or cluster opened meanwhile is closed. */
  stop(): void;
}

export interface PgStartOptions {
  url: string;
  log: Logger;
  deadlineMs: number;
  /** The cluster's fetch and slot leases (commands/serve.ts says why this long). */
  leaseMs?: number;
  /** A cluster to use instead of opening one (tests). */
  cluster?: Cluster;
  /** The back-off between attempts: doubles from `initialMs` up to `maxMs`. Default 250 ms, 5 s. */
  retry?: { initialMs: number; maxMs: number };
}

// SQLSTATEs (PostgreSQL, Appendix A) of a server that answers and refuses us: no wait changes
// them, an operator must. 28P01: wrong password; 28000: no such role, or pg_hba.conf rejects us;
// 3D000: no such database; 42501: the role may not create our tables.
const REFUSED: Record<string, string> = {
  "28P01": "the password was refused",
  "28000": "the role is missing or not allowed to connect",
  "3D000": "the database does not exist",
  "42501": "the role lacks the privilege to create the proxy's tables",
};

/** Why waiting cannot help, or undefined for an outage (refused connection, timeout, DNS, restart). */
export function refusal(e: unknown): string | undefined {
  for (let c: unknown = e, depth = 0; c instanceof Error && depth < 5; c = c.cause, depth++) {
    if (c instanceof InvalidDatabaseUrl) return "the URL is not valid";
    if (c instanceof NewerSchema) return "a newer build migrated the database";
    const code = (c as { code?: unknown }).code;
    if (typeof code === "string" && REFUSED[code]) return REFUSED[code];
  }
  return undefined;
}

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

export async function openPostgresAtStart(o: PgStartOptions): Promise<PgStart> {
  const open = async (): Promise<{ store: Store; cluster: Cluster }> => {
    const store = await openPostgresStore(o.url);
    try {
      const cluster =
        o.cluster ?? (await PgCluster.open({ url: o.url, log: o.log, deadlineMs: o.deadlineMs, leaseMs: o.leaseMs }));
      return { store, cluster };
    } catch (e) {
      await store.close().catch(() => {});
      throw e;
    }
  };
  try {
    const now = await open();
    return { ...now, whenOpen: (fn) => fn(), stop: () => {} };
  } catch (e) {
    // One line, and the exit status 1 (main.ts): a supervisor restarting us would only repeat it.
    if (refusal(e)) throw new Error(message(e));
    o.log.error(
      "PostgreSQL is not reachable at start-up: serving plain traffic only (pass-through, /sync without injection), " +
        "refreshes answer 503 and /readyz fails until it is; trying again in the background",
      { database: redactUrl(o.url), error: message(e) },
    );
    return degraded(o, open, message(e));
  }
}

function degraded(o: PgStartOptions, open: () => Promise<{ store: Store; cluster: Cluster }>, first: string): PgStart {
  const late = lateStore();
  late.failing(first);
  const cluster = o.cluster ?? new LateCluster();
  const waiting: (() => void)[] = [];
  const { initialMs, maxMs } = o.retry ?? { initialMs: 250, maxMs: 5_000 };
  let delay = initialMs;
  let stopped = false;
  let opened = false;
  // The refusal last logged (undefined: unreachable): one line per change, not per attempt.
  let said: string | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const attempt = async () => {
    try {
      const now = await open();
      if (stopped) {
        await Promise.all([now.store.close(), o.cluster ? undefined : now.cluster.close()]).catch(() => {});
        return;
      }
      opened = true;
      late.open(now.store);
      if (cluster instanceof LateCluster) await cluster.open(now.cluster);
      o.log.info("PostgreSQL is reachable: the store and the cluster are open, refreshes and injection resume", {
        database: redactUrl(o.url),
      });
      for (const fn of waiting.splice(0)) fn();
    } catch (e) {
      late.failing(message(e));
      const why = refusal(e);
      // It answers now, and refuses us (another replica's upgrade, a changed password): a
      // restart would refuse to start, so this replica keeps serving plain traffic and says why.
      if (why !== said) {
        if (why)
          o.log.error(`PostgreSQL refuses this replica (${why}): still serving plain traffic only`, {
            database: redactUrl(o.url),
            error: message(e),
          });
        else
          o.log.warn("PostgreSQL is not reachable: still serving plain traffic only", {
            database: redactUrl(o.url),
            error: message(e),
          });
        said = why;
      }
      if (stopped) return;
      timer = setTimeout(() => void attempt(), delay);
      timer.unref?.();
      delay = Math.min(delay * 2, maxMs);
    }
  };
  timer = setTimeout(() => void attempt(), delay);
  timer.unref?.();
  delay = Math.min(delay * 2, maxMs);
  return {
    store: late.store,
    cluster,
    whenOpen: (fn) => void (opened ? fn() : waiting.push(fn)),
    stop: () => {
      stopped = true;
      clearTimeout(timer);
      waiting.length = 0;
    },
  };
}
