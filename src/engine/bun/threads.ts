// --front-threads N: N − 1 more front ends in Worker threads, on the same port (SO_REUSEPORT: the
// kernel spreads connections across them). One JavaScript thread relays ~20,000 small requests
// a second here; more threads use more cores (docs/performance.md). The proxy's state stays on
// this thread: a worker asks it for each /sync's plan (thread-link.ts) and hears its wakes.
import { Worker } from "node:worker_threads";
import { deviceKey, type Waiter } from "../../delivery/waiters.ts";
import type { Level, Logger } from "../../observe/log.ts";
import type { Services } from "../../routes/context.ts";
import type { Front } from "./server.ts";
import type { Destination } from "./pool.ts";
import { DevicePoll, type MainSyncGate, type Ticket, wakeBodyFor } from "./sync-gate.ts";
import type { Planned, ToMain, ToWorker } from "./thread-link.ts";
import { storeFallback } from "../../store/store-guard.ts";
import { onToDevice } from "../../resync/self-heal.ts";

/** What a front-end thread needs to start (structured-cloned into it). */
export interface FrontWorkerData {
  listen: string;
  upstream: string;
  headerTimeoutMs: number;
  upstreamCa?: string;
  app: Destination;
  secret: string;
  trustedProxies: string[];
  logLevel: Level;
}

export interface FrontThreadsOptions {
  /** Worker threads to start. */
  count: number;
  /** The worker entrypoint (src/front-worker.ts, or its name in the compiled binary). */
  url: string;
  data: FrontWorkerData;
  gate: MainSyncGate;
  svc: Services;
  log: Logger;
}

export interface FrontThreads {
  readonly connections: number;
  /** Requests each worker has served (reported every half second, and on flush). */
  readonly served: number[];
  /** Collect every worker's metrics now (before a scrape). */
  flush(): Promise<void>;
  close(): Promise<void>;
  closeIdle(): void;
  closeAll(): void;
}

const STARTUP_MS = 10_000;
const FLUSH_MS = 250;

class Thread {
  readonly worker: Worker;
  connections = 0;
  served = 0;
  readonly #o: FrontThreadsOptions;
  readonly #held = new Map<number, { key: string; waiter: Waiter }>();
  #flushed: (() => void)[] = [];
  #closed: (() => void) | undefined;

  constructor(o: FrontThreadsOptions) {
    this.#o = o;
    this.worker = new Worker(new URL(o.url), { workerData: o.data });
  }

  post(m: ToWorker): void {
    this.worker.postMessage(m);
  }

  flush(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, FLUSH_MS); // a busy or dead thread must not hold a scrape
      this.#flushed.push(() => {
        clearTimeout(timer);
        resolve();
      });
      this.post({ t: "flush" });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#closed = resolve;
      this.post({ t: "close" });
    });
  }

  /** The thread is gone: its polls can no longer be woken, and nothing waits for it. */
  gone(): void {
    for (const h of this.#held.values()) this.#o.svc.delivery.waiters.remove(h.key, h.waiter);
    this.#held.clear();
    this.#flushed.splice(0).forEach((f) => f());
    this.#closed?.();
  }

  onMessage(m: ToMain): void {
    const { svc, gate } = this.#o;
    switch (m.t) {
      case "plan":
        Promise.resolve(gate.planFor(m.r))
          .then(
            (plan): Planned => {
              if (plan === "app") return { kind: "app" };
              if (!(plan instanceof DevicePoll)) return { kind: "plain" };
              // An injection needs the body in this thread: the app's sync route does it.
              if (plan.inject) return { kind: "app" };
              return {
                kind: "poll",
                observe: plan.reports,
                detect: plan.detects,
                longPoll: plan.longPoll !== undefined,
                ticket: plan.ticket,
              };
            },
            (): Planned => ({ kind: "plain" }),
          )
          .then((p) => this.post({ t: "planned", id: m.id, ...p }));
        return;
      case "hold":
        return this.#hold(m.id, m.ticket);
      case "release": {
        const h = this.#held.get(m.id);
        if (h) svc.delivery.waiters.remove(h.key, h.waiter);
        this.#held.delete(m.id);
        return;
      }
      case "reported":
        return svc.overlays.homeserverReported(m.users);
      case "clues":
        return onToDevice(svc.heal, m.who, m.clues);
      case "listed":
        return svc.heal?.views.reported(m.users);
      case "log":
        return this.#o.log[m.level](m.msg, m.fields);
      case "stats":
        this.connections = m.connections;
        this.served = m.served;
        for (const [route, status, n] of m.counts) svc.metrics?.requests.inc({ route, status }, n);
        for (const [route, values] of m.latency)
          for (const v of values) svc.metrics?.upstreamLatency.observe({ route }, v);
        this.#flushed.splice(0).forEach((f) => f());
        return;
      case "closed":
        this.#closed?.();
        return;
      case "ready":
        return;
    }
  }

  #hold(id: number, ticket: Ticket): void {
    const { svc } = this.#o;
    const key = deviceKey(ticket.userId, ticket.deviceId);
    const waiter = {
      wake: () => void wakeBodyFor(svc, ticket).then((body) => this.post({ t: "wake", id, body })),
    };
    svc.delivery.waiters.add(key, waiter);
    this.#held.set(id, { key, waiter });
    // A refresh that landed between the plan and this hold found no waiter: answer it now, as
    // the single-threaded front end would have (its plan and hold happen in one turn).
    void storeFallback(() => svc.store.hasPending(ticket.userId, ticket.deviceId), false).then((p) => {
      if (p && this.#held.get(id)?.waiter === waiter) waiter.wake();
    });
  }
}

export async function startFrontThreads(o: FrontThreadsOptions): Promise<FrontThreads> {
  const threads: Thread[] = [];
  try {
    for (let i = 0; i < o.count; i++) {
      const t = new Thread(o);
      threads.push(t);
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("a front-end thread did not start in time")), STARTUP_MS);
        t.worker.on("message", (m: ToMain) => {
          if (m.t === "ready") {
            clearTimeout(timer);
            resolve();
          }
          t.onMessage(m);
        });
        t.worker.on("error", (e) => {
          clearTimeout(timer);
          o.log.error("a front-end thread failed", { error: e });
          reject(e);
        });
        t.worker.on("exit", () => t.gone());
      });
    }
  } catch (e) {
    await Promise.all(threads.map((t) => t.worker.terminate()));
    throw e;
  }
  return {
    get connections() {
      return threads.reduce((n, t) => n + t.connections, 0);
    },
    get served() {
      return threads.map((t) => t.served);
    },
    flush: async () => void (await Promise.all(threads.map((t) => t.flush()))),
    async close() {
      await Promise.all(threads.map((t) => t.close()));
      await Promise.all(threads.map((t) => t.worker.terminate()));
    },
    closeIdle: () => threads.forEach((t) => t.post({ t: "closeIdle" })),
    closeAll: () => threads.forEach((t) => t.post({ t: "closeAll" })),
  };
}

/** The main front end and its threads, as the one Front that drain() closes. */
export function withThreads(front: Front, threads: FrontThreads): Front {
  return {
    address: front.address,
    get connections() {
      return front.connections + threads.connections;
    },
    close(done) {
      let left = 2;
      const one = () => void (--left === 0 && done?.());
      front.close(one);
      void threads.close().then(one);
    },
    closeIdleConnections() {
      front.closeIdleConnections();
      threads.closeIdle();
    },
    closeAllConnections() {
      front.closeAllConnections();
      threads.closeAll();
    },
  };
}
