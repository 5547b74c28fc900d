// The PostgreSQL cluster (cluster.ts): sessions of its own (pg-sessions.ts), every call under a
// deadline and failing as StoreUnavailable (pg-guard.ts), which the request paths already turn
// into a 503 or a plain pass-through. This file wires the parts and carries the bus's messages:
// the shared events out to the subscribers, the internal ones to the lease and slot waiters.
import { hostname } from "node:os";
import type postgres from "postgres";
import type { Logger } from "../observe/log.ts";
import { migratePostgres } from "../store/pg-migrations.ts";
import type { BucketSpec, Cluster, ClusterEvent, Landed, SharedLease } from "./cluster.ts";
import { PgBus, type Wire } from "./pg-bus.ts";
import { flight, type LeaseDeps } from "./pg-flight.ts";
import { clusterGuard, type Guard } from "./pg-guard.ts";
import { PgLease } from "./pg-lease.ts";
import { PgLimiter } from "./pg-limiter.ts";
import { LeasePeeks } from "./pg-peek.ts";
import { openSessions } from "./pg-sessions.ts";
import { PgSlots } from "./pg-slots.ts";
import { sweep } from "./pg-sweep.ts";
import { Watches } from "./pg-watches.ts";

export interface PgClusterOptions {
  url: string;
  log: Logger;
  /** How long a lease outlives a replica that stopped renewing it (killed). Default 30 s; serve.ts sets it from the fetch deadline. */
  leaseMs?: number;
  /** A coordination call slower than this fails (StoreUnavailable). Default 2 s. */
  deadlineMs?: number;
  channel?: string;
  /** Sessions for statements (besides the listening one). Default 4. */
  poolSize?: number;
}

// Event kinds on the wire; "l" (a flight landed) and "s" (a slot freed) stay inside the cluster.
// A fan-out ("f") travels as one id per user: "<at>|<user id>".
const KIND: Record<string, ClusterEvent["kind"]> = {
  p: "pending",
  n: "snapshots",
  v: "views",
  f: "fanout",
  r: "resubscribed",
  t: "retries",
};
const WIRE: Record<ClusterEvent["kind"], string> = {
  pending: "p",
  snapshots: "n",
  views: "v",
  fanout: "f",
  resubscribed: "r",
  retries: "t",
};

export class PgCluster implements Cluster {
  readonly shared = true;
  readonly holder = `${hostname()}:${process.pid}:${crypto.randomUUID().slice(0, 8)}`;
  readonly #sql: postgres.Sql;
  readonly #leaseSql: postgres.Sql;
  readonly #listenSql: postgres.Sql;
  readonly #bus: PgBus;
  readonly #subs = new Set<(e: ClusterEvent) => void>();
  readonly #watches = new Watches();
  readonly #peeks: LeasePeeks;
  readonly #guard: Guard;
  readonly #deps: LeaseDeps;
  readonly #slots: PgSlots;
  #sweeper: ReturnType<typeof setInterval> | undefined;

  private constructor(o: PgClusterOptions) {
    const deadlineMs = o.deadlineMs ?? 2_000;
    const sessions = openSessions({
      url: o.url,
      holder: this.holder,
      deadlineMs,
      poolSize: o.poolSize ?? 4,
      onnotify: (c, payload) => this.#bus.notified(c, payload),
      onclose: () => this.#bus.closed(),
    });
    this.#sql = sessions.statements.sql;
    this.#leaseSql = sessions.leases.sql;
    this.#listenSql = sessions.listen;
    // The statement pools are replaced when a call finds a session a database restart left dead.
    this.#guard = clusterGuard([sessions.statements, sessions.leases], deadlineMs, o.log);
    const channel = o.channel ?? "matrix_resync_proxy";
    this.#bus = new PgBus({
      sql: this.#sql,
      listenSql: this.#listenSql,
      channel,
      origin: this.holder,
      log: o.log,
      onMessage: (w) => this.#onWire(w),
      onResubscribed: () => this.#emit({ kind: "resubscribed" }),
    });
    this.#deps = {
      sql: this.#leaseSql,
      holder: this.holder,
      leaseMs: o.leaseMs ?? 30_000,
      channel,
      guard: this.#guard,
      watch: (kind, id) => this.#watches.watch(kind, id),
    };
    this.#slots = new PgSlots(this.#deps, (k, ids) => this.#wire(k, ids));
    // The statement pool, not the lease one: peeks come per refresh, the lease statements must
    // not queue behind them.
    this.#peeks = new LeasePeeks(this.#sql, this.#guard);
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
    return new PgLimiter(this.#sql, name, spec, this.#guard);
  }

  flight(key: string, run: () => Promise<Landed>, freshMs: number): Promise<Landed> {
    return flight(this.#deps, key, run, freshMs, (k, ids) => this.#wire(k, ids));
  }

  peek(key: string, freshMs: number): Promise<Landed | "running" | undefined> {
    return this.#peeks.peek(key, freshMs);
  }

  slot(destination: string, limit: number): Promise<() => void> {
    return this.#slots.slot(destination, limit);
  }

  lease(name: string): SharedLease {
    return new PgLease(this.#deps, name);
  }

  publish(e: ClusterEvent): void {
    if (e.kind === "resubscribed" || e.kind === "retries") this.#bus.send(WIRE[e.kind]);
    else if (e.kind === "pending") this.#bus.send("p", e.devices);
    else if (e.kind === "fanout") this.#bus.send("f", [`${e.at}|${e.user}`]);
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
      this.#watches.notified(w.k, ids);
      return;
    }
    if (w.o === this.holder) return;
    const kind = KIND[w.k];
    if (kind === "pending") this.#emit({ kind, devices: ids });
    else if (kind === "snapshots" || kind === "views") this.#emit({ kind, users: ids });
    else if (kind === "fanout")
      for (const id of ids) {
        const bar = id.indexOf("|");
        const at = Number(id.slice(0, bar));
        if (bar > 0 && Number.isFinite(at)) this.#emit({ kind, user: id.slice(bar + 1), at });
      }
    else if (kind === "resubscribed" || kind === "retries") this.#emit({ kind });
  }

  #emit(e: ClusterEvent): void {
    if (e.kind === "resubscribed") this.#watches.wakeAll();
    for (const fn of this.#subs) {
      try {
        fn(e);
      } catch {
        // a subscriber's fault must not stop the others hearing it
      }
    }
  }
}
