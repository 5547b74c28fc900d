// The PostgreSQL cluster (cluster.ts): its own sessions, separate from the store's, so a long
// lease or a burst of notifications never queues behind the store's statements, and the
// listening session is never lent out. Every call has a deadline and fails as StoreUnavailable,
// which the request paths already turn into a 503 or a plain pass-through.
import { hostname } from "node:os";
import postgres from "postgres";
import type { Logger } from "../observe/log.ts";
import { endedByServer, type ResettablePool, resettablePool, sessionLost } from "../store/pg-pool.ts";
import { migratePostgres } from "../store/pg-migrations.ts";
import { StoreUnavailable } from "../store/store-guard.ts";
import type { BucketSpec, Cluster, ClusterEvent, Landed } from "./cluster.ts";
import { PgBus, type Wire } from "./pg-bus.ts";
import { flight, type LeaseDeps, type LeaseRow, peeked, readLease } from "./pg-flight.ts";
import { PgLimiter } from "./pg-limiter.ts";
import { sweep } from "./pg-sweep.ts";
import { PgSlots } from "./pg-slots.ts";

export interface PgClusterOptions {
  url: string;
  log: Logger;
  /** How long a lease outlives a replica that stopped renewing it (killed). Default 30 s. */
  leaseMs?: number;
  /** A coordination call slower than this fails (StoreUnavailable). Default 2 s. */
  deadlineMs?: number;
  channel?: string;
  /** Sessions for statements (besides the listening one). Default 4. */
  poolSize?: number;
}

// Event kinds on the wire; "l" (a flight landed) and "s" (a slot freed) stay inside the cluster.
const KIND: Record<string, ClusterEvent["kind"]> = { p: "pending", n: "snapshots", v: "views", r: "resubscribed" };
const WIRE: Record<ClusterEvent["kind"], string> = { pending: "p", snapshots: "n", views: "v", resubscribed: "r" };

export class PgCluster implements Cluster {
  readonly shared = true;
  readonly holder = `${hostname()}:${process.pid}:${crypto.randomUUID().slice(0, 8)}`;
  readonly #sql: postgres.Sql;
  readonly #leaseSql: postgres.Sql;
  readonly #listenSql: postgres.Sql;
  readonly #bus: PgBus;
  readonly #subs = new Set<(e: ClusterEvent) => void>();
  readonly #watches = new Map<string, Set<() => void>>();
  // Concurrent peeks of one key share one read: a storm's refreshes of a user miss this
  // replica's cache together, and each would otherwise cost a statement.
  readonly #peeks = new Map<string, Promise<LeaseRow | undefined>>();
  readonly #deps: LeaseDeps;
  readonly #slots: PgSlots;
  readonly #deadlineMs: number;
  // The statement pools, replaced when a call finds a session a database restart left dead.
  readonly #pools: ResettablePool[];
  #sweeper: ReturnType<typeof setInterval> | undefined;

  private constructor(o: PgClusterOptions) {
    this.#deadlineMs = o.deadlineMs ?? 2_000;
    const common = {
      onnotice: () => {},
      connect_timeout: Math.ceil(this.#deadlineMs / 1000),
      // Reconnect attempts back off to at most a second, as the store's do (store/postgres.ts):
      // the client's default grows to 20 s, and every refresh takes a shared rate-limit token
      // here, so a replica answered 503 for that long after the database was back.
      backoff: (attempts: number) => Math.min(0.05 * 2 ** attempts, 1),
    };
    // Named in pg_stat_activity (63 bytes at most), so an operator or a test tells them apart.
    const named = (role: string) => ({ connection: { application_name: `mrp-${role} ${this.holder}`.slice(0, 63) } });
    const pool = resettablePool(o.url, { ...common, ...named("cluster"), max: o.poolSize ?? 4 });
    this.#sql = pool.sql;
    // Leases and slots get sessions of their own: a storm's per-request statements (a rate-limit
    // take per refresh) would otherwise queue the few lease statements past the deadline, and a
    // whole replica's joiners of one fetch would answer 503 with the database healthy. Their
    // number is bounded by the targets in flight (joiners share one flight per replica).
    const leasePool = resettablePool(o.url, { ...common, ...named("lease"), max: o.poolSize ?? 4 });
    this.#leaseSql = leasePool.sql;
    this.#pools = [pool, leasePool];
    const channel = o.channel ?? "matrix_resync_proxy";
    this.#listenSql = postgres(o.url, {
      ...common,
      ...named("bus"),
      max: 1,
      idle_timeout: 0,
      max_lifetime: null,
      onnotify: (c: string, payload: string) => this.#bus.notified(c, payload),
      onclose: () => this.#bus.closed(),
    } as postgres.Options<Record<string, postgres.PostgresType>>);
    this.#bus = new PgBus({
      sql: this.#sql,
      listenSql: this.#listenSql,
      channel,
      origin: this.holder,
      log: o.log,
      onMessage: (w) => this.#onWire(w),
      onResubscribed: () => this.#emit({ kind: "resubscribed" }),
    });
    const guard = <T>(op: string, call: () => Promise<T>) => this.#guard(op, call);
    this.#deps = {
      sql: this.#leaseSql,
      holder: this.holder,
      leaseMs: o.leaseMs ?? 30_000,
      channel,
      guard,
      watch: (kind, id) => this.#watch(kind, id),
    };
    this.#slots = new PgSlots(this.#deps, (k, ids) => this.#wire(k, ids));
  }

  static async open(o: PgClusterOptions): Promise<PgCluster> {
    const c = new PgCluster(o);
    try {
      // Its tables are the store's (store/pg-migrations.ts), migrated here too, so a cluster
      // opened on its own (tests, tools) finds them; at this build's version, one short
      // transaction that changes nothing.
      await migratePostgres(c.#sql);
      await c.#bus.start();
    } catch (e) {
      await c.close();
      throw e;
    }
    c.#sweeper = setInterval(() => void sweep(c.#sql).catch(() => {}), 600_000);
    c.#sweeper.unref?.();
    return c;
  }

  limiter(name: string, spec: BucketSpec): PgLimiter {
    return new PgLimiter(this.#sql, name, spec, (op, call) => this.#guard(op, call));
  }

  flight(key: string, run: () => Promise<Landed>, freshMs: number): Promise<Landed> {
    return flight(this.#deps, key, run, freshMs, (k, ids) => this.#wire(k, ids));
  }

  peek(key: string, freshMs: number): Promise<Landed | "running" | undefined> {
    let read = this.#peeks.get(key);
    if (!read) {
      // The statement pool, not the lease one: this runs per refresh, the lease statements must
      // not queue behind it.
      read = readLease(this.#sql, (op, call) => this.#guard(op, call), key).finally(() => this.#peeks.delete(key));
      this.#peeks.set(key, read);
    }
    return read.then((row) => peeked(row, freshMs));
  }

  slot(destination: string, limit: number): Promise<() => void> {
    return this.#slots.slot(destination, limit);
  }

  publish(e: ClusterEvent): void {
    if (e.kind === "resubscribed") this.#bus.send("r");
    else if (e.kind === "pending") this.#bus.send("p", e.devices);
    else this.#bus.send(WIRE[e.kind], e.users);
  }

  subscribe(fn: (e: ClusterEvent) => void): () => void {
    this.#subs.add(fn);
    return () => this.#subs.delete(fn);
  }

  /** Sends what is queued (tests, close). */
  flush(): Promise<void> {
    return this.#bus.flush();
  }

  get listening(): boolean {
    return this.#bus.listening;
  }

  async close(): Promise<void> {
    clearInterval(this.#sweeper);
    await this.#bus.flush().catch(() => {});
    this.#bus.close();
    await Promise.all([
      this.#sql.end({ timeout: 1 }),
      this.#leaseSql.end({ timeout: 1 }),
      this.#listenSql.end({ timeout: 1 }),
    ]);
  }

  #wire(k: string, ids: string[]): string {
    return JSON.stringify({ o: this.holder, k, i: ids } satisfies Wire);
  }

  #onWire(w: Wire): void {
    const ids = Array.isArray(w.i) ? w.i.filter((x): x is string => typeof x === "string") : [];
    // A lease's waiters may be on the holder's own replica; everything else this replica did
    // itself already.
    if (w.k === "l" || w.k === "s") {
      for (const id of ids) for (const wake of this.#watches.get(`${w.k}|${id}`) ?? []) wake();
      return;
    }
    if (w.o === this.holder) return;
    const kind = KIND[w.k];
    if (kind === "pending") this.#emit({ kind, devices: ids });
    else if (kind === "snapshots" || kind === "views") this.#emit({ kind, users: ids });
    else if (kind === "resubscribed") this.#emit({ kind });
  }

  #emit(e: ClusterEvent): void {
    if (e.kind === "resubscribed") for (const wake of [...this.#watches.values()].flatMap((s) => [...s])) wake();
    for (const fn of this.#subs) {
      try {
        fn(e);
      } catch {
        // a subscriber's fault must not stop the others hearing it
      }
    }
  }

  #watch(kind: string, id: string): { wait(ms: number): Promise<void>; cancel(): void } {
    const key = `${kind}|${id}`;
    let fired = false;
    let resolve: (() => void) | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const wake = () => {
      fired = true;
      resolve?.();
    };
    let set = this.#watches.get(key);
    if (!set) this.#watches.set(key, (set = new Set()));
    set.add(wake);
    const cancel = () => {
      clearTimeout(timer);
      const s = this.#watches.get(key);
      if (s?.delete(wake) && s.size === 0) this.#watches.delete(key);
    };
    return {
      wait: (ms) =>
        fired
          ? Promise.resolve()
          : new Promise<void>((r) => {
              resolve = r;
              timer = setTimeout(r, ms);
            }),
      cancel,
    };
  }

  /**
   * `call` under the deadline. A failure that says its session is gone (or no answer in time)
   * replaces the statement pools (store/pg-pool.ts); a statement the server refused before it
   * ran goes once more, on a fresh session.
   */
  async #guard<T>(op: string, call: () => Promise<T>): Promise<T> {
    try {
      return await this.#once(call());
    } catch (e) {
      const timedOut = e instanceof ClusterDeadline;
      if (!sessionLost(e, timedOut)) throw new StoreUnavailable(`cluster ${op}`, e);
      for (const p of this.#pools) p.reset();
      if (timedOut || !endedByServer(e)) throw new StoreUnavailable(`cluster ${op}`, e);
      try {
        return await this.#once(call());
      } catch (e2) {
        throw new StoreUnavailable(`cluster ${op}`, e2);
      }
    }
  }

  async #once<T>(p: Promise<T>): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ClusterDeadline(this.#deadlineMs)), this.#deadlineMs);
    });
    try {
      return await Promise.race([p, late]);
    } catch (e) {
      p.catch(() => {}); // a late failure of the abandoned statement is not unhandled
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }
}

class ClusterDeadline extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
  }
}
