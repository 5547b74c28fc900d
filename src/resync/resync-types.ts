// What the refresh flow (resyncer.ts) is given and what it answers: its options, the outcome a
// caller receives, and what started a fetch.
import type { Cluster, SharedLimiter } from "../cluster/cluster.ts";
import type { FederationError } from "../federation/errors.ts";
import type { DeviceSnapshot } from "../matrix/device.ts";
import type { Logger } from "../observe/log.ts";
import type { Store } from "../store/store.ts";
import type { BackoffPolicy } from "./backoff.ts";

export type RefreshOutcome =
  /**
   * `changed`: the list differs from what the requester's clients were shown (heal.ts). `late`:
   * joined a fetch whose fan-out had begun, so the requester's devices were not told by it.
   */
  | { kind: "ok"; snapshot: DeviceSnapshot; fromCache: boolean; changed: boolean; late?: boolean }
  | { kind: "local" }
  /**
   * `landed`: the outcome once the fetch ends (never rejects), for the caller to tell the
   * requester's devices when the fan-out could not have (a late join, another replica's fetch).
   */
  | { kind: "pending"; landed?: Promise<RefreshOutcome> }
  | { kind: "limited"; retryAfterMs: number }
  | { kind: "failed"; error: FederationError; nextRetryInMs?: number };

export interface ResyncOptions {
  store: Store;
  serverName: string;
  fetchDevices: (userId: string) => Promise<{ snapshot: DeviceSnapshot }>;
  /** Called after every fresh snapshot is stored: delivery adds pending rows and wakes long-polls. */
  onSnapshot?: (s: DeviceSnapshot) => void | Promise<void>;
  /**
   * When set, replaces storing + onSnapshot: decides whether the fresh list is a real change
   * (heal.ts) and delivers it only then. Returns whether it did.
   */
  onFresh?: (s: DeviceSnapshot, ctx: ResyncContext) => Promise<boolean>;
  onFailure?: (userId: string, e: FederationError) => void;
  /** A remote answer older than the stored snapshot was kept out (metrics). */
  onStaleAnswer?: (userId: string) => void;
  refreshCacheMs: number;
  retry: BackoffPolicy;
  maxAttempts: number;
  probeIntervalMs: number;
  /**
   * Due retries are claimed for this long under this holder's name (Store.claimDueRetries):
   * with replicas sharing the store, one runs each, and another takes it over after the lease.
   */
  retryLease?: { holder: string; ms: number };
  limits: { requester: SharedLimiter; target: SharedLimiter };
  /**
   * Replicas sharing a database (cluster/): one fetch per target across all of them. Absent or
   * not shared: this process's in-flight map is the single flight.
   */
  cluster?: Cluster;
  log: Logger;
  now?: () => number;
}

/**
 * Why a fetch was started: the `trigger` label of resync_heals_total (docs/operations.md). A
 * retry keeps the trigger of the fetch that failed (stored with the retry entry).
 */
export const TRIGGERS = ["endpoint", "to_device", "keys_query", "audit", "admin"] as const;
export type Trigger = (typeof TRIGGERS)[number];

/** A stored retry's trigger; entries written before it was stored came from explicit refreshes. */
export function triggerOf(stored: string | undefined): Trigger {
  return (TRIGGERS as readonly string[]).includes(stored ?? "") ? (stored as Trigger) : "endpoint";
}

export interface ResyncContext {
  trigger: Trigger;
  /** What raised it (a suspicion's signal), for the heal's log line. */
  why?: string;
  /**
   * The access token of the device whose traffic raised the question, to ask the homeserver
   * for its view when we have none (delivery/views.ts). Memory only: never stored or logged.
   */
  token?: string;
  /** Schedule retries when the fetch fails (explicit refreshes); background checks do not. */
  retry?: boolean;
  /**
   * A check of the audit's walk (resync/audit.ts), which looks for silent staleness: a list the
   * homeserver is reporting in motion is left to the next pass (resync/heal.ts). Not set for an
   * overlay's re-verification, also counted as "audit", which that very report starts.
   */
  walk?: boolean;
}

/** What a background check (a suspicion, the audit) did. */
export type BackgroundStart = "started" | "joined" | "cached" | "limited" | "backoff" | "local";
