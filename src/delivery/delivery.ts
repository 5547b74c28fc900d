// Who gets told about a fresh device list (docs/architecture.md "Fresh data reaches clients two ways"): every
// device of the user who asked, and every local device that queried that user's keys through
// us. Each such device gets a durable pending row; a long-poll it has waiting is woken.
import { LRUCache } from "lru-cache";
import type { Logger } from "../observe/log.ts";
import type { Requester } from "../http/auth.ts";
import { type ClientPaths, createClientPaths } from "../http/client-paths.ts";
import type { Upstream } from "../http/upstream.ts";
import type { DeviceSnapshot } from "../matrix/device.ts";
import type { Store } from "../store/store.ts";
import type { Cluster } from "../cluster/cluster.ts";
import { CLOCK_SLACK_MS, type Device, LateTrackers } from "./late-trackers.ts";
import { TrackerWriter, type TrackerWriterOptions } from "./tracker-writer.ts";
import { deviceKey, Waiters } from "./waiters.ts";

/** How long a fresh list waits at most for queued trackers of its user to be written. */
const TRACKERS_WAIT_MS = 2000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());

export interface DeliveryOptions {
  store: Store;
  upstream: Upstream;
  /** The client API's version prefix (v3 or r0), shared with auth. */
  paths?: ClientPaths;
  log: Logger;
  trackerTtlMs: number;
  /** --max-trackers-per-device (default: no limit). */
  maxTrackersPerDevice?: number;
  /** Told of (device, target) pairs not tracked (tracker-writer.ts). */
  onTrackDropped?: TrackerWriterOptions["onDropped"];
  /** Replicas (cluster/): their long-polls of these devices are woken too. */
  cluster?: Cluster;
  now?: () => number;
}

export class Delivery {
  readonly waiters = new Waiters();
  /** Query trackers on their way to the store. */
  readonly trackers: TrackerWriter;
  readonly #o: DeliveryOptions;
  readonly #now: () => number;
  readonly #paths: ClientPaths;
  readonly #devicesOf = new LRUCache<string, string[]>({ max: 10_000, ttl: 60_000 });
  // When each (device, target) tracker was last written. Clients query keys often, and each
  // write is a durable (fsync'd) transaction: refreshing last_seen once per 1/10 of the TTL
  // (at most hourly) keeps the expiry honest, at most that much early, without a disk flush
  // per /keys/query.
  readonly #written = new LRUCache<string, number>({ max: 10_000 });
  readonly #connWritten = new LRUCache<string, number>({ max: 10_000 });
  /**
   * Per device, the delivery streams ("" for /sync, a sliding-sync conn_id otherwise) whose last answer-at-once poll could not
   * carry the delivery (an answer we cannot splice: an error, an encoding we do not read).
   * Their polls keep their own timeout until a delivery is carried or a new one comes, so a
   * device is never driven into a loop of timeout=0 polls that make no progress.
   */
  readonly #unforced = new LRUCache<string, Set<string>>({ max: 100_000 });
  /** Trackers written after a fan-out (here or on another replica) read them. */
  readonly #late: LateTrackers;
  constructor(o: DeliveryOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#paths = o.paths ?? createClientPaths({ upstream: o.upstream, log: o.log });
    this.#late = new LateTrackers(this.#now);
    this.trackers = new TrackerWriter({
      store: o.store,
      maxPerDevice: o.maxTrackersPerDevice ?? Infinity,
      log: o.log,
      onDropped: (n, why) => {
        // Lost to a failing store: the next query must write them again, not wait out #written.
        if (why === "store") this.#written.clear();
        o.onTrackDropped?.(n, why);
      },
      onWritten: (userId, deviceId, targets, since) => {
        const device = { userId, deviceId };
        for (const t of this.#late.written(device, targets, since, this.#now())) this.#tellLate([device], t);
      },
    });
  }

  /** The requester's devices (a homeserver call, cached; nothing is written). */
  async requesterDevices(who: Requester): Promise<{ userId: string; deviceId: string }[]> {
    return (await this.#deviceIds(who)).map((deviceId) => ({ userId: who.userId, deviceId }));
  }

  /** These devices follow the target from now on (so a later success reaches them). */
  async trackDevices(devices: { userId: string; deviceId: string }[], target: string): Promise<void> {
    for (const d of devices) await this.#o.store.track(d.userId, d.deviceId, [target], this.#now());
  }

  /** A device queried these users' keys: it will hear about their refreshes (once written, soon). */
  trackQuery(who: Requester, targets: string[]): void {
    if (!who.deviceId || targets.length === 0) return;
    const now = this.#now();
    const every = Math.min(this.#o.trackerTtlMs / 10, 3_600_000);
    const due = targets.filter(
      (t) => now - (this.#written.get(`${who.userId}|${who.deviceId}|${t}`) ?? -Infinity) >= every,
    );
    if (due.length === 0) return;
    this.trackers.enqueue(who.userId, who.deviceId, due, now);
    for (const t of due) this.#written.set(`${who.userId}|${who.deviceId}|${t}`, now);
  }

  /** A fresh snapshot: tell every tracking device. */
  async onSnapshot(s: DeviceSnapshot): Promise<void> {
    // A device that queried the user's keys a moment ago may not be written yet (the writer
    // takes a turn, and a networked store a round trip): it is told too. Bounded, so a flood of
    // queued trackers delays no delivery for long.
    if (this.trackers.holds(s.userId)) await Promise.race([this.trackers.idle(), sleep(TRACKERS_WAIT_MS)]);
    const at = this.#now();
    const devices = await this.#o.store.trackersOf(s.userId);
    // A tracker written after that read, here or on another replica, is told too (late-trackers.ts).
    if (this.#o.cluster?.shared) this.#o.cluster.publish({ kind: "fanout", user: s.userId, at });
    this.#tellLate(this.#late.fannedOut(s.userId, at, 0), s.userId);
    await this.deliver(devices, s.userId);
  }

  /** Another replica's fan-out of `target` read its trackers at `at` (its clock). */
  fannedOutElsewhere(target: string, at: number): void {
    this.#tellLate(this.#late.fannedOut(target, at, CLOCK_SLACK_MS), target);
  }

  // The fan-out may have told them after all (the order is not known): a row it added stays as
  // it is, so a client already given it is not told twice.
  #tellLate(devices: Device[], target: string): void {
    if (devices.length === 0) return;
    this.deliver(devices, target, true).catch((e) =>
      this.#o.log.warn("could not tell devices whose trackers were written after a fan-out", {
        userId: target,
        error: String((e as Error)?.message ?? e),
      }),
    );
  }

  /** Pending rows for these devices, committed; then their long-polls are woken. */
  async deliver(devices: { userId: string; deviceId: string }[], target: string, keep = false): Promise<void> {
    if (devices.length === 0) return;
    await this.#o.store.addPending(
      devices.map((d) => ({ ...d, target })),
      this.#now(),
      keep,
    );
    for (const d of devices) this.#unforced.delete(deviceKey(d.userId, d.deviceId));
    const keys = devices.map((d) => deviceKey(d.userId, d.deviceId));
    this.waiters.wake(keys);
    // After the rows are written: a replica woken by this finds them.
    if (this.#o.cluster?.shared) this.#o.cluster.publish({ kind: "pending", devices: keys });
  }

  /** May this stream's next poll with something pending be asked to answer at once? */
  mayForce(userId: string, deviceId: string, stream: string): boolean {
    return !this.#unforced.get(deviceKey(userId, deviceId))?.has(stream);
  }

  /** An answer-at-once poll of this stream could (false) or could not (true) carry the delivery. */
  forcedWithoutProgress(userId: string, deviceId: string, stream: string, stuck: boolean): void {
    const key = deviceKey(userId, deviceId);
    const set = this.#unforced.get(key);
    if (stuck) {
      if (set) set.add(stream);
      else this.#unforced.set(key, new Set([stream]));
    } else if (set?.delete(stream) && set.size === 0) this.#unforced.delete(key);
  }

  /**
   * A sliding-sync connection that asked for the e2ee extension (routes/sync.ts). Its last_seen
   * is written once per tenth of the TTL, as trackers are: not a durable write per poll.
   */
  async openConn(userId: string, deviceId: string, conn: string): Promise<void> {
    const key = `${userId}|${deviceId}|${conn}`;
    const now = this.#now();
    const every = Math.min(this.#o.trackerTtlMs / 10, 3_600_000);
    if (now - (this.#connWritten.get(key) ?? -Infinity) < every) return;
    await this.#o.store.openConn(userId, deviceId, conn, now);
    this.#connWritten.set(key, now);
  }

  async expireTrackers(): Promise<number> {
    this.trackers.forget();
    const olderThan = this.#now() - this.#o.trackerTtlMs;
    await this.#o.store.expireConns(olderThan);
    this.#connWritten.clear();
    return this.#o.store.expireTrackers(olderThan);
  }

  // GET /devices with the requester's own token: the homeserver knows all their devices.
  // Without it only the asking device hears of the refresh, so a failure is a warning.
  async #deviceIds(who: Requester): Promise<string[]> {
    const cached = this.#devicesOf.get(who.userId);
    const ids = new Set(cached ?? []);
    if (!cached) {
      let problem: string | undefined;
      try {
        const res = await this.#paths.call({
          method: "GET",
          path: "devices",
          headers: { authorization: `Bearer ${who.token}`, "accept-encoding": "identity" },
          headerTimeoutMs: 10_000,
          maxBytes: 4 << 20,
        });
        const body = JSON.parse(res.body.toString("utf8")) as { devices?: { device_id?: unknown }[] };
        if (res.status === 200 && Array.isArray(body.devices)) {
          for (const d of body.devices) if (typeof d.device_id === "string") ids.add(d.device_id);
          this.#devicesOf.set(who.userId, [...ids]);
        } else problem = `${res.target} answered ${res.status}`;
      } catch (e) {
        problem = String(e);
      }
      if (problem !== undefined)
        this.#o.log.warn("could not list the requester's devices; only the asking device will hear of the refresh", {
          userId: who.userId,
          error: problem,
        });
    }
    if (who.deviceId) ids.add(who.deviceId);
    return [...ids];
  }
}
