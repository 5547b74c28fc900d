// A front-end thread's link to the main thread (--front-threads). The thread relays bytes on its
// own; what needs the proxy's state goes through here: a /sync's plan (token lookup,
// acknowledgement, pending deliveries), its early wake, the homeserver's own reports, the log
// lines and metrics of the requests it served.
import { enabled, type Level, type Logger } from "../../observe/log.ts";
import type { Waiter } from "../../delivery/waiters.ts";
import type { AccessMetrics } from "./access-log.ts";
import type { BodyObserver } from "./response.ts";
import { ReportedWatch } from "../../delivery/json/reported-watch.ts";
import type { ToDeviceClue } from "../../delivery/to-device-clues.ts";
import { bothObservers, ToDeviceWatch } from "../../delivery/to-device-watch.ts";
import {
  type LongPoll,
  PLAIN,
  type SyncGate,
  type SyncPlan,
  type SyncRequest,
  type SyncRoute,
  syncRequest,
  type Ticket,
} from "./sync-gate.ts";

export type ToMain =
  | { t: "ready" }
  | { t: "plan"; id: number; r: SyncRequest }
  | { t: "hold"; id: number; ticket: Ticket }
  | { t: "release"; id: number }
  | { t: "reported"; users: string[] }
  /** To-device clues a polled device received (resync/detect.ts); the token asks the homeserver when needed. */
  | { t: "clues"; who: { userId: string; deviceId: string; token: string }; clues: ToDeviceClue[] }
  /** Users a polled /sync body named in its own device_lists.changed (delivery/views.ts). */
  | { t: "listed"; users: string[] }
  | { t: "log"; level: Level; msg: string; fields?: Record<string, unknown> }
  | {
      t: "stats";
      counts: [string, string, number][];
      latency: [string, number[]][];
      connections: number;
      served: number;
    }
  | { t: "closed" };

export type Planned =
  | { kind: "app" }
  | { kind: "plain" }
  | { kind: "poll"; observe: boolean; detect: boolean; longPoll: boolean; ticket: Ticket };

export type ToWorker =
  | ({ t: "planned"; id: number } & Planned)
  | { t: "wake"; id: number; body: string }
  | { t: "close" }
  | { t: "closeIdle" }
  | { t: "closeAll" }
  | { t: "flush" };

export class MainLink implements SyncGate {
  readonly post: (m: ToMain) => void;
  readonly #planned = new Map<number, (r: SyncRoute) => void>();
  readonly #held = new Map<number, RemotePoll>();
  #nextId = 1;
  // Requests served and their metrics since the last report: sent in batches, since a message
  // per request would cost more than relaying the request.
  #served = 0;
  #counts = new Map<string, [string, string, number]>();
  #latency = new Map<string, number[]>();

  constructor(post: (m: ToMain) => void) {
    this.post = post;
  }

  plan(head: Parameters<SyncGate["plan"]>[0]): SyncRoute | Promise<SyncRoute> {
    const r = syncRequest(head);
    if (!r) return PLAIN;
    const id = this.#nextId++;
    this.post({ t: "plan", id, r });
    return new Promise((resolve) =>
      this.#planned.set(id, (route) => {
        if (route instanceof RemotePoll) route.token = r.token;
        resolve(route);
      }),
    );
  }

  /** A message from the main thread that is about a request (control messages are the caller's). */
  receive(m: ToWorker): void {
    if (m.t === "planned") {
      const resolve = this.#planned.get(m.id);
      this.#planned.delete(m.id);
      resolve?.(
        m.kind === "app"
          ? "app"
          : m.kind === "plain"
            ? PLAIN
            : new RemotePoll(this, m.observe, m.detect, m.longPoll, m.ticket),
      );
    } else if (m.t === "wake") this.#held.get(m.id)?.woken(m.body);
  }

  holdId(p: RemotePoll): number {
    const id = this.#nextId++;
    this.#held.set(id, p);
    return id;
  }

  unhold(id: number): void {
    this.#held.delete(id);
  }

  readonly metrics: AccessMetrics = {
    requests: {
      labels: ({ route, status }) => ({
        inc: () => {
          this.#served++;
          const key = `${route} ${status}`;
          const c = this.#counts.get(key);
          if (c) c[2]++;
          else this.#counts.set(key, [route, status, 1]);
        },
      }),
    },
    upstreamLatency: {
      labels: ({ route }) => ({
        observe: (v) => {
          let l = this.#latency.get(route);
          if (!l) this.#latency.set(route, (l = []));
          l.push(v);
        },
      }),
    },
  };

  /** Log lines go to the main thread's logger, whose output and level are the process's. */
  logger(level: Level): Logger {
    const at = (lvl: Level) => (msg: string, fields?: Record<string, unknown>) => {
      if (!enabled(level, lvl)) return;
      try {
        this.post({ t: "log", level: lvl, msg, fields });
      } catch {
        // A field that cannot be copied to another thread: the line without its fields.
        this.post({ t: "log", level: lvl, msg });
      }
    };
    return {
      debug: at("debug"),
      info: at("info"),
      warn: at("warn"),
      error: at("error"),
      writes: (lvl) => enabled(level, lvl),
    };
  }

  /** Send what was counted since the last report. */
  report(connections: number): void {
    this.post({
      t: "stats",
      counts: [...this.#counts.values()],
      latency: [...this.#latency],
      connections,
      served: this.#served,
    });
    this.#counts = new Map();
    this.#latency = new Map();
  }
}

/** A /sync the main thread planned, served from this thread. */
class RemotePoll implements SyncPlan, LongPoll {
  readonly inject = undefined;
  readonly longPoll: LongPoll | undefined;
  readonly #link: MainLink;
  readonly #observe: boolean;
  readonly #detect: boolean;
  readonly #ticket: Ticket;
  /** The request's access token, for detection's question to the homeserver. */
  token = "";
  #id = 0;
  #waiter: Waiter | undefined;
  #body = "";

  constructor(link: MainLink, observe: boolean, detect: boolean, longPoll: boolean, ticket: Ticket) {
    this.#link = link;
    this.#observe = observe;
    this.#detect = detect;
    this.#ticket = ticket;
    this.longPoll = longPoll ? this : undefined;
  }

  get observes(): boolean {
    return this.#observe || this.#detect;
  }

  observer(): BodyObserver | undefined {
    const reported = this.#observe
      ? new ReportedWatch((users) => this.#link.post({ t: "reported", users }))
      : undefined;
    const who = { userId: this.#ticket.userId, deviceId: this.#ticket.deviceId, token: this.token };
    const clues = this.#detect
      ? new ToDeviceWatch(
          (c) => this.#link.post({ t: "clues", who, clues: c }),
          "sync",
          (users) => this.#link.post({ t: "listed", users }),
        )
      : undefined;
    return bothObservers(reported, clues);
  }

  hold(w: Waiter): void {
    this.#waiter = w;
    this.#id = this.#link.holdId(this);
    this.#link.post({ t: "hold", id: this.#id, ticket: this.#ticket });
  }

  release(): void {
    this.#waiter = undefined;
    this.#link.unhold(this.#id);
    this.#link.post({ t: "release", id: this.#id });
  }

  wakeBody(): string {
    return this.#body;
  }

  woken(body: string): void {
    this.#body = body;
    this.#waiter?.wake();
  }
}
