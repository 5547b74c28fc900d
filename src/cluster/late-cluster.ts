// The cluster of a replica whose database was not reachable at start-up (commands/pg-start.ts):
// until the real one is handed over, every coordination call fails as StoreUnavailable (as the
// real one's do while the database is down: the request paths answer 503 or go plain), nothing
// is published (this replica wrote nothing to tell of), and the subscribers wait. Once it is
// handed over, every call goes to it, and the subscribers hear `resubscribed`: whatever the other
// replicas said meanwhile was missed, so the caches start again from the store.
import { StoreNotOpen, StoreUnavailable } from "../store/store-guard.ts";
import type { BucketSpec, Cluster, ClusterEvent, Landed, SharedLease, SharedLimiter } from "./cluster.ts";

export class LateCluster implements Cluster {
  readonly shared = true;
  #real: Cluster | undefined;
  #closed = false;
  readonly #subs = new Set<(e: ClusterEvent) => void>();

  /** Hands over the opened cluster (closed at once if this one already is). */
  async open(real: Cluster): Promise<void> {
    if (this.#closed) return real.close();
    this.#real = real;
    real.subscribe((e) => this.#emit(e));
    this.#emit({ kind: "resubscribed" });
  }

  #notOpen(op: string): Promise<never> {
    return Promise.reject(new StoreUnavailable(`cluster ${op}`, new StoreNotOpen("PostgreSQL is not reachable yet")));
  }

  limiter(name: string, spec: BucketSpec): SharedLimiter {
    // Asked for once, at start-up (resync/rate-limit.ts): the real one's is made on first use.
    let shared: SharedLimiter | undefined;
    return {
      take: (key) => {
        if (!this.#real) return this.#notOpen("limiter");
        shared ??= this.#real.limiter(name, spec);
        // A cluster that shares no limiter is never handed over here (only PgCluster is).
        return shared ? shared.take(key) : 0;
      },
    };
  }

  flight(key: string, run: () => Promise<Landed>, freshMs: number): Promise<Landed> {
    return this.#real ? this.#real.flight(key, run, freshMs) : this.#notOpen("flight");
  }

  peek(key: string, freshMs: number): Promise<Landed | "running" | undefined> {
    return this.#real ? this.#real.peek(key, freshMs) : this.#notOpen("peek");
  }

  slot(destination: string, limit: number): Promise<() => void> {
    return this.#real ? this.#real.slot(destination, limit) : this.#notOpen("slot");
  }

  lease(name: string): SharedLease {
    // Asked for once, at start-up (the audit, which only starts once the database is open).
    let real: SharedLease | undefined;
    const now = () => (real ??= this.#real?.lease(name));
    return {
      claim: () => now()?.claim() ?? this.#notOpen("lease"),
      save: (state) => now()?.save(state) ?? this.#notOpen("lease"),
      release: () => real?.release() ?? Promise.resolve(),
      // The real lease's pace once there is one (cluster/pg-lease.ts: a third of the lease);
      // until then, a look every 10 s.
      get claimEveryMs() {
        return now()?.claimEveryMs ?? 10_000;
      },
    };
  }

  publish(e: ClusterEvent): void {
    this.#real?.publish(e);
  }

  subscribe(fn: (e: ClusterEvent) => void): () => void {
    this.#subs.add(fn);
    return () => this.#subs.delete(fn);
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#real?.close();
  }

  #emit(e: ClusterEvent): void {
    for (const fn of this.#subs) {
      try {
        fn(e);
      } catch {
        // a subscriber's fault must not stop the others hearing it
      }
    }
  }
}
