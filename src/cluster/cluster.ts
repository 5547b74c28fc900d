// What makes several replicas behave as one process (docs/architecture.md "Cross-replica
// coordination"): shared rate limits, one fetch per target user at a time, at most a few fetches
// per destination, and a bus that tells the other replicas what changed. In-process (SQLite)
// every one of these is today's local mechanism; on PostgreSQL they live in the database.
export interface BucketSpec {
  /** Burst size. */
  burst: number;
  /** Tokens regained per second. */
  perSecond: number;
}

/** A token bucket per key; the in-process one answers synchronously (no cost on the hot path). */
export interface SharedLimiter {
  /** Takes a token: 0 when allowed, else the milliseconds until one is available. */
  take(key: string): number | Promise<number>;
}

/** What one replica tells the others. Payloads stay small: ids only, never device lists. */
export type ClusterEvent =
  /** Pending rows were added for these devices (`deviceKey`s): wake their long-polls. */
  | { kind: "pending"; devices: string[] }
  /** These users' stored snapshots (overlays) were written or deleted. */
  | { kind: "snapshots"; users: string[] }
  /** These users' views of the homeserver's answer were written or dropped. */
  | { kind: "views"; users: string[] }
  /**
   * A fresh list of `user` was delivered: its fan-out read the trackers at `at` (the sender's
   * clock, ms). A tracker written later by another replica may have been missed by that read
   * (delivery/late-trackers.ts).
   */
  | { kind: "fanout"; user: string; at: number }
  /**
   * A retry was scheduled or moved: every replica's retry loop looks again at when the next one
   * is due, so it can take over one whose claimer dies at the end of its lease.
   */
  | { kind: "retries" }
  /**
   * The bus was (re)connected: anything sent while it was down was missed, so every replica
   * re-checks everything (wakes all long-polls, drops its caches).
   */
  | { kind: "resubscribed" };

/** The outcome of a fetch as the other replicas see it (flight.ts); opaque text to the cluster. */
export interface Landed {
  ok: boolean;
  result: string;
}

/**
 * A named lease one replica at a time holds (the audit, resync/audit.ts), with a little state of
 * its holder's kept beside it, so a replica that takes over carries on where the last one stood.
 */
export interface SharedLease {
  /**
   * Takes the lease when free or expired, or renews it when ours: then the state last saved
   * with it (null: none yet); false while another replica holds it.
   */
  claim(): Promise<{ state: string | null } | false>;
  /** Saves the holder's state and renews the lease; false when it is no longer ours. */
  save(state: string): Promise<boolean>;
  /** Gives the lease up (shutdown): another replica takes it at its next claim. */
  release(): Promise<void>;
  /** How often to claim: a holder renews, the others look (Infinity: one process holds it for good). */
  readonly claimEveryMs: number;
}

export interface Cluster {
  /** false: one process (SQLite); the local mechanisms are the whole truth. */
  readonly shared: boolean;
  /**
   * A token bucket shared by every replica, named (`requester`, `target`); undefined when this
   * process's own buckets are the whole truth (resync/rate-limit.ts).
   */
  limiter(name: string, spec: BucketSpec): SharedLimiter | undefined;
  /**
   * One fetch for `key` across replicas. The replica holding the lease runs `run` and its
   * outcome lands for everyone; the others wait for it (or take over when the lease expires).
   * `freshMs`: an outcome that landed that recently is returned without running anything.
   */
  flight(key: string, run: () => Promise<Landed>, freshMs: number): Promise<Landed>;
  /**
   * What the last `flight` of `key` on any replica left, without taking part: `running` while a
   * replica holds its lease, its outcome if that landed within `freshMs`, else undefined. Lets a
   * replica answer as the one that fetched would (a cache hit, a join) without a target token.
   */
  peek(key: string, freshMs: number): Promise<Landed | "running" | undefined>;
  /** At most `limit` slots per destination across replicas; resolves with the release. */
  slot(destination: string, limit: number): Promise<() => void>;
  /** The lease named `name`. Take one handle per name in a process: two would both hold it. */
  lease(name: string): SharedLease;
  /** Tell the other replicas (never this one: it acted already). */
  publish(e: ClusterEvent): void;
  /** Events from the other replicas (and `resubscribed`). */
  subscribe(fn: (e: ClusterEvent) => void): () => void;
  close(): Promise<void>;
}
