// "Our server was down for a day; resync everyone on it": refresh every user of one remote
// server that the proxy knows about, as one background job per server.
import type { Logger } from "../observe/log.ts";
import type { Resyncer } from "../resync/resyncer.ts";
import { serverOf } from "../matrix/user-id.ts";
import type { Store } from "../store/store.ts";

export interface ServerJob {
  server: string;
  total: number;
  done: number;
  ok: number;
  failed: number;
  /** Left for the retry queue because the destination went back into backoff mid-job. */
  deferred: number;
  started_at: number;
  finished_at?: number;
}

// The transport admits 3 requests in flight per destination (Synapse's rc_federation.concurrent
// on the remote): more workers would only queue there and spend their timeout budget waiting.
const WORKERS = 3;

export interface JobOptions {
  store: Store;
  resyncer: Resyncer;
  log: Logger;
  now?: () => number;
}

export class ServerJobs {
  readonly #o: JobOptions;
  readonly #now: () => number;
  readonly #jobs = new Map<string, ServerJob>();

  constructor(o: JobOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
  }

  get(server: string): ServerJob | undefined {
    return this.#jobs.get(server);
  }

  /** Users tracked on the server, with a snapshot there, or waiting for a retry there. */
  async usersOn(server: string): Promise<string[]> {
    const { store } = this.#o;
    const all = new Set(await store.trackedUsersOn(server));
    for (const u of await store.listSnapshotUsers()) if (serverOf(u) === server) all.add(u);
    for (const r of await store.listRetries()) if (serverOf(r.userId) === server) all.add(r.userId);
    return [...all].sort();
  }

  /** Starts a job, or returns the one still running for this server (started: false). */
  async start(server: string, requestedBy: string): Promise<{ job: ServerJob; started: boolean }> {
    const running = this.#running(server);
    if (running) return { job: running, started: false };
    const users = await this.usersOn(server);
    // Another operator's request may have started it meanwhile.
    const started = this.#running(server);
    if (started) return { job: started, started: false };
    const job: ServerJob = {
      server,
      total: users.length,
      done: 0,
      ok: 0,
      failed: 0,
      deferred: 0,
      started_at: this.#now(),
    };
    this.#jobs.set(server, job);
    // The operator says the server is back: a backoff left from the outage must not hold the
    // job (or the retry queue) back. If it is still down, the first failures set a new one.
    void this.#o.store
      .clearBackoff(server)
      .catch(() => {}) // a failing store: the job's first fetch finds the backoff and defers
      .then(() => this.#run(job, users, [requestedBy]));
    return { job, started: true };
  }

  #running(server: string): ServerJob | undefined {
    const job = this.#jobs.get(server);
    return job && job.finished_at === undefined ? job : undefined;
  }

  async #run(job: ServerJob, users: string[], requestedBy: string[]): Promise<void> {
    const { log } = this.#o;
    let next = 0;
    const worker = async () => {
      while (next < users.length) {
        const userId = users[next++]!;
        try {
          await this.#one(job, userId, requestedBy);
        } catch {
          // A failing store (its guard logs it): this user is not done, and the job goes on (it
          // is started in the background: a rejection here would escape unhandled, and the job
          // would never finish).
          job.failed++;
        }
        job.done++;
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, worker));
    job.finished_at = this.#now();
    log.info("admin: server refresh finished", {
      server: job.server,
      total: job.total,
      ok: job.ok,
      failed: job.failed,
      deferred: job.deferred,
    });
  }

  /** One user of the job: deferred to the retry queue while the destination is in backoff, else fetched. */
  async #one(job: ServerJob, userId: string, requestedBy: string[]): Promise<void> {
    const { store, resyncer } = this.#o;
    const b = await store.getBackoff(job.server);
    if (b && b.retryAt > this.#now()) {
      // Down again: hand the rest to the retry queue, due when the backoff ends.
      const prev = await store.getRetry(userId);
      await store.putRetry({
        userId,
        attempts: prev?.attempts ?? 0,
        dueAt: b.retryAt,
        requestedBy: [...new Set([...(prev?.requestedBy ?? []), ...requestedBy])].slice(-50),
        lastError: prev?.lastError ?? "destination in backoff",
        trigger: "admin",
      });
      job.deferred++;
    } else {
      try {
        await resyncer.run(userId, requestedBy, {
          trigger: "admin",
          why: `server refresh of ${job.server}`,
          retry: true,
        });
        job.ok++;
      } catch {
        job.failed++; // recorded by the resyncer: retry entry and destination backoff
      }
    }
  }
}
