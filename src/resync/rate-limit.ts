import { LRUCache } from "lru-cache";
import type { BucketSpec, Cluster, SharedLimiter } from "../cluster/cluster.ts";

interface Bucket {
  tokens: number;
  at: number;
}

/** Buckets refilled to their burst are looked for at most this often (a walk over all of them). */
const SWEEP_MS = 10_000;

/**
 * Token buckets keyed by a string (a requesting user, a target user). Bounded: a flood of
 * distinct keys evicts the least recently used buckets, which only ever errs towards allowing.
 * A bucket refilled to its burst is the same as none and is dropped: the audit takes a target
 * token for every tracked user each pass, and kept, each would stay (docs/performance.md).
 */
export class RateLimiter {
  readonly #spec: BucketSpec;
  readonly #buckets = new LRUCache<string, Bucket>({ max: 100_000 });
  readonly #now: () => number;
  #sweptAt = -Infinity;

  constructor(spec: BucketSpec, now: () => number = Date.now) {
    this.#spec = spec;
    this.#now = now;
  }

  /** Buckets held. */
  get size(): number {
    return this.#buckets.size;
  }

  /** Takes a token; returns 0 when allowed, else the milliseconds until one is available. */
  take(key: string): number {
    const now = this.#now();
    this.#sweep(now);
    const b = this.#buckets.get(key) ?? { tokens: this.#spec.burst, at: now };
    b.tokens = Math.min(this.#spec.burst, b.tokens + ((now - b.at) / 1000) * this.#spec.perSecond);
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      this.#buckets.set(key, b);
      return 0;
    }
    this.#buckets.set(key, b);
    return Math.ceil(((1 - b.tokens) / this.#spec.perSecond) * 1000);
  }

  /** Drops the buckets that have refilled to their burst since their last take. */
  #sweep(now: number): void {
    if (now - this.#sweptAt < SWEEP_MS) return;
    this.#sweptAt = now;
    const { burst, perSecond } = this.#spec;
    const full: string[] = [];
    this.#buckets.forEach((b, k) => {
      if (b.tokens + ((now - b.at) / 1000) * perSecond >= burst) full.push(k);
    });
    for (const k of full) this.#buckets.delete(k);
  }
}

/**
 * The limiter for one of the refresh limits: the cluster's shared bucket when replicas share a
 * database (one user's burst holds whichever replica serves each refresh), else this process's.
 */
export function refreshLimiter(cluster: Cluster, name: string, spec: BucketSpec): SharedLimiter {
  return cluster.limiter(name, spec) ?? new RateLimiter(spec);
}
