// When a snapshot may stand in for the homeserver's answer (docs/architecture.md "Fresh data
// reaches clients two ways": "The overlay is dropped"). The rule that matters: we must never *cause* staleness by pinning an old snapshot.
import { LRUCache } from "lru-cache";
import type { Logger } from "../observe/log.ts";
import { storeFallback } from "../store/store-guard.ts";
import type { DeviceSnapshot } from "../matrix/device.ts";
import type { Store } from "../store/store.ts";
import type { Cluster } from "../cluster/cluster.ts";

export interface OverlayOptions {
  store: Store;
  maxAgeMs: number;
  /** Start a background fetch of the user's list (the resyncer's single-flight run). */
  refetch: (userId: string) => void;
  /** Replicas (cluster/): told of every snapshot written or dropped here, and tell us theirs. */
  cluster?: Cluster;
  log: Logger;
  now?: () => number;
}

export class Overlays {
  readonly #o: OverlayOptions;
  readonly #now: () => number;
  // A cheap guard for the hot path: with no snapshots at all, /sync bodies are never looked at.
  readonly #known = new Set<string>();
  /** Settles once the users with snapshots have been read from the store. */
  readonly ready: Promise<void>;
  // Snapshots as objects, so an overlaid /keys/query does not parse one from the store each
  // time (2.4 ms for 1000 devices). Every write passes through here (noteSnapshot, #drop), so
  // this never disagrees with the store. Bounded by devices held: a few megabytes.
  readonly #parsed = new LRUCache<string, DeviceSnapshot>({
    maxSize: 20_000,
    sizeCalculation: (s) => Object.keys(s.devices).length + 1,
  });

  constructor(o: OverlayOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    // A failing store (logged by its guard) starts with none: overlays begin with the next snapshot.
    this.ready = o.store.listSnapshotUsers().then(
      (users) => void users.forEach((u) => this.#known.add(u)),
      () => {},
    );
  }

  get active(): boolean {
    return this.#known.size > 0;
  }

  noteSnapshot(s: DeviceSnapshot): void {
    this.#known.add(s.userId);
    this.#parsed.set(s.userId, s);
    this.#tell(s.userId);
  }

  /**
   * Another replica wrote or deleted these users' snapshots: the store has the truth, read
   * again on next use (a deleted one is then forgotten, as after a restart).
   */
  changedElsewhere(users: readonly string[]): void {
    for (const u of users) {
      this.#parsed.delete(u);
      this.#known.add(u);
    }
  }

  /** Whatever other replicas did meanwhile is unknown (the bus was down): start from the store. */
  async reload(): Promise<void> {
    const users = await this.#o.store.listSnapshotUsers();
    this.#parsed.clear();
    this.#known.clear();
    for (const u of users) this.#known.add(u);
  }

  #tell(userId: string): void {
    if (this.#o.cluster?.shared) this.#o.cluster.publish({ kind: "snapshots", users: [userId] });
  }

  /** Snapshots fit to serve for these users. Too old: not served, and fetched again. */
  async servable(users: Iterable<string>): Promise<Map<string, DeviceSnapshot>> {
    const out = new Map<string, DeviceSnapshot>();
    for (const u of users) {
      if (!this.#known.has(u)) continue;
      let s = this.#parsed.get(u);
      if (!s) {
        s = await this.#o.store.getSnapshot(u);
        if (!this.#known.has(u)) continue; // dropped meanwhile
        if (!s) {
          this.#known.delete(u);
          continue;
        }
        this.#parsed.set(u, s);
      }
      if (this.#now() - s.fetchedAt > this.#o.maxAgeMs) {
        this.#o.refetch(u);
        continue;
      }
      out.set(u, s);
    }
    return out;
  }

  /** The homeserver's own answer equals the snapshot: it caught up, so step aside. */
  async caughtUp(users: string[]): Promise<void> {
    for (const u of users) await this.#drop(u, "homeserver caught up");
  }

  /**
   * The homeserver says these users changed (its own device_lists.changed). Its answer may now be
   * newer than ours: stop serving ours blindly and re-verify with a fresh fetch.
   */
  homeserverReported(users: string[]): void {
    for (const u of users) {
      if (!this.#known.has(u)) continue;
      void this.#drop(u, "homeserver reported a change; re-verifying");
      this.#o.refetch(u);
    }
  }

  async #drop(u: string, why: string): Promise<void> {
    this.#parsed.delete(u);
    if (!this.#known.delete(u)) return;
    // A failing store keeps the row; it is simply no longer served (known again after a restart).
    await storeFallback(() => this.#o.store.deleteSnapshot(u), undefined);
    this.#tell(u);
    this.#o.log.info("overlay dropped", { userId: u, why });
  }
}
