// Durable state of the proxy (docs/architecture.md "Durable state"): everything here must survive
// `kill -9`, and every write that matters is committed before the client is answered.
// The API is asynchronous so that a networked back end (PostgreSQL, shared by several replicas)
// implements it too; the embedded SQLite store answers at once with settled promises. A write
// has happened when its promise resolves: callers await it before answering a client.
import type { HsView } from "../matrix/device.ts";

import type { DeviceSnapshot } from "../matrix/device.ts";

/** Per-destination federation backoff (docs/architecture.md "Federation": Synapse backs off per destination too). */
export interface Backoff {
  destination: string;
  failures: number;
  retryAt: number;
  lastProbeAt: number;
}

/** A failed refresh that will be retried; upserted by userId. */
export interface RetryEntry {
  userId: string;
  attempts: number;
  dueAt: number;
  /** Who asked for the refresh; opaque strings chosen by the caller, kept in order. */
  requestedBy: string[];
  lastError?: string;
  /** What started the refresh (resync/resync-types.ts Trigger): the retry's heal counts under it. */
  trigger?: string;
}

/** "This device must be told that `target`'s device list changed". */
export interface PendingDelivery {
  target: string;
  /**
   * What acknowledges this delivery, oldest first: the suffixes of ours (delivery/tokens.ts) of
   * the positions of answers that carried it, each booked before its answer went out.
   */
  carriedIn: string[];
}

export interface Store {
  getSnapshot(userId: string): Promise<DeviceSnapshot | undefined>;
  putSnapshot(s: DeviceSnapshot): Promise<void>;
  deleteSnapshot(userId: string): Promise<void>;
  listSnapshotUsers(): Promise<string[]>;

  getBackoff(destination: string): Promise<Backoff | undefined>;
  putBackoff(b: Backoff): Promise<void>;
  clearBackoff(destination: string): Promise<void>;
  listBackoffs(): Promise<Backoff[]>;

  /** Upsert by userId. */
  putRetry(r: RetryEntry): Promise<void>;
  getRetry(userId: string): Promise<RetryEntry | undefined>;
  deleteRetry(userId: string): Promise<void>;
  /** Entries with dueAt <= now, earliest dueAt first, at most `limit`. */
  dueRetries(now: number, limit: number): Promise<RetryEntry[]>;
  /**
   * Due entries nobody holds (no lease, or an expired one), earliest first, at most `limit`:
   * each is leased to `holder` until now + leaseMs, so one replica runs a due retry, and
   * another takes it over once the lease ends if that one dies. putRetry and deleteRetry end
   * the lease. Replicas claiming at once get disjoint entries.
   */
  claimDueRetries(now: number, limit: number, holder: string, leaseMs: number): Promise<RetryEntry[]>;
  listRetries(): Promise<RetryEntry[]>;
  /** When the retry loop must look next: the earliest due time, a leased entry's at its lease's end. */
  nextRetryAt(): Promise<number | undefined>;

  /**
   * Idempotent. Re-adding an existing row RESETS its carriedIn: a newer change must be
   * delivered again, so a token that carried the older change no longer acknowledges it.
   * Each sliding-sync connection the device has opened (openConn) gets the row too.
   * `keep`: a row that exists already is left as it is, carriedIn included (a delivery that may
   * repeat one just made, delivery/late-trackers.ts: the client must not be told twice).
   */
  addPending(rows: { userId: string; deviceId: string; target: string }[], now?: number, keep?: boolean): Promise<void>;
  // `conn`: a simplified-sliding-sync connection's own rows (MSC4186 conn_id); without it, the
  // device's rows, which classic /sync delivers and acknowledges.
  pendingFor(userId: string, deviceId: string, conn?: string): Promise<PendingDelivery[]>;
  hasPending(userId: string, deviceId: string, conn?: string): Promise<boolean>;
  /** Appends `token` (a suffix of ours) to carriedIn of the named rows that still exist (keeps the last 8). */
  markCarried(userId: string, deviceId: string, targets: string[], token: string, conn?: string): Promise<void>;
  /** Deletes this device's (or connection's) rows whose carriedIn contains `token`; returns how many. */
  ackToken(userId: string, deviceId: string, token: string, conn?: string): Promise<number>;
  /**
   * A sliding-sync connection that asked for the e2ee extension: from now on it gets every
   * delivery of its own. One seen for the first time starts with the device's pending rows.
   */
  openConn(userId: string, deviceId: string, conn: string, now: number): Promise<void>;
  /**
   * Connections not seen since `olderThan` go, with their rows; so do the device's own rows
   * older than that of devices that have connections (nothing else would ever acknowledge them).
   */
  expireConns(olderThan: number): Promise<number>;
  countPending(): Promise<number>;

  /**
   * Upserts last_seen for each (device, target): the device queried target's keys. Adds at
   * most `maxNew` rows (default: no limit); existing rows are always refreshed. Returns how
   * many new rows it added, and how many it refused for the limit.
   */
  track(
    userId: string,
    deviceId: string,
    targets: string[],
    now: number,
    maxNew?: number,
  ): Promise<{ added: number; refused: number }>;
  /** How many trackers each device has. */
  trackerCounts(): Promise<{ userId: string; deviceId: string; count: number }[]>;
  trackersOf(target: string): Promise<{ userId: string; deviceId: string }[]>;
  /** Distinct tracked targets whose server name (after the first ':') equals serverName. */
  trackedUsersOn(serverName: string): Promise<string[]>;
  /** Deletes trackers with last_seen < olderThan, and the views of users no longer tracked; returns how many trackers. */
  expireTrackers(olderThan: number): Promise<number>;
  /** Distinct tracked targets sorted after `after` (exclusive), at most `limit`: the audit's walk. */
  trackedTargetsAfter(after: string, limit: number): Promise<string[]>;
  countTrackedTargets(): Promise<number>;

  /** The homeserver's view of a remote user (delivery/hs-view.ts). */
  getView(userId: string): Promise<HsView | undefined>;
  putView(v: HsView): Promise<void>;
  /** Several views in one write transaction (delivery/views.ts coalesces them). */
  putViews(vs: readonly HsView[]): Promise<void>;
  countViews(): Promise<number>;

  /** A real write (heartbeat row); rejects when the store is not writable. */
  ping(): Promise<void>;
  close(): Promise<void>;
  /**
   * A networked store's repair after a failed call (store-guard.ts calls it, never a request
   * path): true when the call may be sent once more (it certainly did not run).
   */
  recover?(e: unknown, timedOut: boolean): boolean;
}
