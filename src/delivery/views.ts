// The homeserver's view of each tracked remote user (hs-view.ts), kept durable in the store and
// cached in memory. Learned from /keys/query answers as they pass through us; when a question
// comes up about a user we have no view of, learned by asking the homeserver itself, with the
// token of the device whose traffic raised the question (docs/architecture.md "Self-healing").
import { LRUCache } from "lru-cache";
import type { Logger } from "../observe/log.ts";
import type { ClientPaths } from "../http/client-paths.ts";
import type { Store } from "../store/store.ts";
import type { HsView } from "../matrix/device.ts";
import type { Cluster } from "../cluster/cluster.ts";
import { sameView, viewsFromAnswer } from "./hs-view.ts";
import { deviceCount, seenAgain } from "./view-wire.ts";

export interface ViewsOptions {
  store: Store;
  /** The homeserver's client API under whichever prefix it serves (v3, or r0 on old servers). */
  paths: ClientPaths;
  log: Logger;
  /** Views kept at most: beyond this, no new user's view is written (existing ones still update). */
  maxViews?: number;
  now?: () => number;
  /** Changed views wait this long to be written together (default 1000 ms). */
  flushMs?: number;
  /** Replicas (cluster/): told which views we wrote, and tell us theirs. */
  cluster?: Cluster;
}

// An answer for one user fits in far less (1000 devices is ~1 MB); a larger one is not read.
const QUERY_MAX_BYTES = 8 * 1024 * 1024;
// How long a decision waits at most for an answer still being read (settled()): the reading
// thread answers in milliseconds; a stuck one must not hold a fresh list back for good.
const SETTLE_MAX_MS = 2_000;

export class Views {
  readonly #o: ViewsOptions;
  readonly #now: () => number;
  readonly #cache = new LRUCache<string, HsView>({
    maxSize: 50_000,
    sizeCalculation: (v) => deviceCount(v) + 1,
  });
  readonly #max: number;
  #count: number;
  // Changed views not yet written, and the timer that writes them. A store write commits (a
  // durable write, milliseconds on a busy disk), so it is not done on the request path: the
  // views changed within one interval are written in one transaction. They are a cache of what
  // the homeserver served: one lost to a crash (kill -9) within the interval is simply learned
  // again from the next answer or query (docs/architecture.md "Self-healing", "Views are a
  // cache, written behind"); a clean close writes them (close()).
  readonly #dirty = new Map<string, HsView>();
  readonly #flushMs: number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  // When the homeserver last named each user in a device_lists.changed (read from /sync bodies):
  // a record of its answer older than that is behind it. Memory only; bounded.
  readonly #reportedAt = new LRUCache<string, number>({ max: 100_000 });
  // Answers already on their way to clients but not yet learned from (read after the client is
  // answered, in the reading thread), per user. A client may act on such an answer before we
  // have read it: a decision about the user waits for them (settled()). Emptied as they settle.
  readonly #learning = new Map<string, Set<Promise<void>>>();

  constructor(o: ViewsOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#max = o.maxViews ?? 200_000;
    this.#flushMs = o.flushMs ?? 1000;
    this.#count = 0;
    // Added to what is learned meanwhile; a failing store (logged by its guard) counts from 0.
    o.store.countViews().then(
      (n) => void (this.#count += n),
      () => {},
    );
  }

  /** Views recorded (kept in step with our writes; recounted after an expiry). */
  get count(): number {
    return this.#count;
  }

  /**
   * The view we hold of `userId`. `keep: false` reads it without caching it: the audit reads
   * every tracked user's view once a pass, and caching each would fill memory with views nobody
   * asks for again before the next pass (docs/architecture.md "Self-healing").
   */
  async get(userId: string, { keep = true } = {}): Promise<HsView | undefined> {
    const hit = this.#memory(userId);
    if (hit) return hit;
    const v = await this.#o.store.getView(userId);
    // Learned meanwhile: what we learned is newer than the row just read.
    const now = this.#memory(userId);
    if (now) return now;
    if (v && keep) this.#cache.set(userId, v);
    return v;
  }

  #memory(userId: string): HsView | undefined {
    return this.#cache.get(userId) ?? this.#dirty.get(userId);
  }

  /**
   * Learn from a /keys/query answer the homeserver gave (before any overlay of ours). Writes
   * only what changed: clients query the same users' keys over and over.
   */
  learn(answer: Record<string, unknown>, requested: Record<string, string[]>, users: readonly string[]): HsView[] {
    const learned = viewsFromAnswer(answer, requested, users, this.#now());
    this.record(learned);
    return learned;
  }

  /** Views read from an answer elsewhere (delivery/view-parser.ts). */
  record(views: readonly HsView[]): void {
    for (const v of views) this.#put(v);
  }

  #put(v: HsView): void {
    const known = this.#memory(v.userId);
    // In memory at once: a question asked right after learning gets what was learned.
    this.#cache.set(v.userId, v);
    if (known) {
      if (!sameView(known, v)) this.#dirtyOne(v, false);
      return;
    }
    // Not in memory: the row decides whether this is new, changed, or the same again.
    this.#o.store.getView(v.userId).then(
      (old) => {
        if (old && sameView(old, v)) return;
        this.#dirtyOne(this.#memory(v.userId) ?? v, !old);
      },
      (e) => this.#o.log.warn("could not read the homeserver's view", { userId: v.userId, error: String(e) }),
    );
  }

  #dirtyOne(v: HsView, isNew: boolean): void {
    if (isNew) {
      if (this.#count >= this.#max) return; // bounded: the cache still answers while it holds it
      this.#count++;
    }
    this.#dirty.set(v.userId, v);
    this.#timer ??= setTimeout(() => this.flush(), this.#flushMs);
    // A pending write must not keep a stopping process alive; close() writes it.
    (this.#timer as { unref?: () => void }).unref?.();
  }

  /** Write the changed views now, in one transaction. */
  async flush(): Promise<void> {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#dirty.size === 0) return;
    const batch = [...this.#dirty.values()];
    this.#dirty.clear();
    try {
      await this.#o.store.putViews(batch);
      const cluster = this.#o.cluster;
      if (cluster?.shared) cluster.publish({ kind: "views", users: batch.map((v) => v.userId) });
    } catch (e) {
      // Disk full or the like: the views stay in memory and are learned again after a restart.
      this.#o.log.warn("could not write the homeserver's views", { count: batch.length, error: String(e) });
    }
  }

  /** Write what is waiting (a clean shutdown, before the store closes). */
  close(): Promise<void> {
    return this.flush();
  }

  /** The homeserver's answer for these users, read at `at`, repeated what we hold. */
  async seen(users: readonly string[], at: number): Promise<void> {
    for (const u of users) {
      const v = await this.get(u);
      // Memory only, like the reports `behind` compares it with.
      if (v && v.seenAt < at) this.#cache.set(u, seenAgain(v, at));
    }
  }

  /**
   * An answer of the homeserver naming these users is being served; `done` settles once what it
   * teaches has been recorded (or it could not be read).
   */
  learning(users: readonly string[], done: Promise<unknown>): void {
    if (users.length === 0) return;
    const p = done.then(
      () => {},
      () => {},
    );
    for (const u of users) {
      let set = this.#learning.get(u);
      if (!set) this.#learning.set(u, (set = new Set()));
      set.add(p);
    }
    void p.then(() => {
      for (const u of users) {
        const set = this.#learning.get(u);
        set?.delete(p);
        if (set?.size === 0) this.#learning.delete(u);
      }
    });
  }

  /** Once the answers about this user served so far have been learned from (at most SETTLE_MAX_MS). */
  async settled(userId: string): Promise<void> {
    const set = this.#learning.get(userId);
    if (!set) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const bound = new Promise<void>((r) => (timer = setTimeout(r, SETTLE_MAX_MS)));
    await Promise.race([Promise.all(set), bound]);
    clearTimeout(timer);
  }

  /** The homeserver named these users in a device_lists.changed just now. */
  reported(users: readonly string[]): void {
    const now = this.#now();
    for (const u of users) this.#reportedAt.set(u, now);
  }

  /** Has the homeserver reported a change of this user since we last read its answer? */
  async behind(userId: string): Promise<boolean> {
    const at = this.#reportedAt.get(userId);
    if (at === undefined) return false;
    const v = await this.get(userId);
    return v === undefined || at >= v.seenAt;
  }

  /** Did the homeserver name this user in a device_lists.changed within the last `ms`? */
  reportedWithin(userId: string, ms: number): boolean {
    const at = this.#reportedAt.get(userId);
    return at !== undefined && this.#now() - at < ms;
  }

  /** Another replica wrote these users' views: read them from the store on next use. */
  changedElsewhere(users: readonly string[]): void {
    for (const u of users) if (!this.#dirty.has(u)) this.#cache.delete(u);
  }

  /** Trackers expired: so did some views; recount. */
  async resync(): Promise<void> {
    await this.flush();
    this.#cache.clear();
    this.#count = await this.#o.store.countViews();
  }

  /**
   * The view of `userId`, asking the homeserver when we have none: POST /keys/query for that one
   * user, with the token of the device whose traffic raised the question (its answer is what that
   * device's client would see). Undefined when the homeserver cannot say.
   */
  async getOrQuery(userId: string, token: string | undefined, o: { keep?: boolean } = {}): Promise<HsView | undefined> {
    const have = await this.get(userId, o);
    if (have || !token) return have;
    return this.query(userId, token);
  }

  /**
   * The homeserver's view now, asked with `token` (the view we hold may be behind it: a client
   * that has not re-queried since the homeserver learned of a change). Undefined when it cannot say.
   */
  async query(userId: string, token: string): Promise<HsView | undefined> {
    try {
      // `timeout` bounds the homeserver's own wait for remote servers (client-server API, POST
      // /keys/query): a fresh list waits on this answer before it is delivered.
      const body = Buffer.from(JSON.stringify({ device_keys: { [userId]: [] }, timeout: 2_000 }));
      const res = await this.#o.paths.call({
        method: "POST",
        path: "keys/query",
        headers: {
          authorization: `Bearer ${token}`,
          "content-type": "application/json",
          "content-length": String(body.length),
          "accept-encoding": "identity",
        },
        body,
        headerTimeoutMs: 5_000,
        maxBytes: QUERY_MAX_BYTES,
      });
      if (res.status !== 200) return undefined;
      const answer = JSON.parse(res.body.toString("utf8")) as unknown;
      if (typeof answer !== "object" || answer === null || Array.isArray(answer)) return undefined;
      return this.learn(answer as Record<string, unknown>, { [userId]: [] }, [userId])[0];
    } catch (e) {
      this.#o.log.debug("could not ask the homeserver for a user's keys", { userId, error: String(e) });
      return undefined;
    }
  }
}
