// The Bun front end's listener. Why it exists: node:http under Bun does ~5–9k small requests/s
// here, a quarter of nginx; Bun.serve and fetch() would be fast but resolve dot-segments in the
// request target, so the path we matched would not be the path we forward. Bun.listen hands us
// bytes: we parse heads ourselves and relay bodies as bytes.
import { rmSync } from "node:fs";
import type { Socket, SocketHandler } from "bun";
import { SlotSet } from "./slots.ts";
import { parseListen } from "../../http/listen.ts";
import type { AccessLog } from "./access-log.ts";
import { ClientConn } from "./client.ts";
import type { FrontContext } from "./dispatch.ts";
import type { Hop } from "./hop.ts";
import type { SyncGate } from "./sync-gate.ts";

export interface FrontOptions {
  /** `host:port` or `unix:/path`, as --listen takes it. */
  listen: string;
  homeserver: Hop;
  app: Hop;
  intercepts(method: string, path: string): boolean | "sync";
  syncGate?: SyncGate;
  access: AccessLog;
  /** Default 75 s (see IDLE_SECONDS). */
  idleSeconds?: number;
  /** Share the port with other front-end threads (SO_REUSEPORT; threads.ts). */
  reusePort?: boolean;
}

// Idle keep-alive connections close after 75 s: longer than common load balancers' 60 s, so
// they close first (as listen.ts sets for node:http). A request in flight has no idle limit:
// a /sync long-poll is silent for its whole timeout.
const IDLE_SECONDS = 75;

/** What drain() (commands/shutdown.ts) uses of a node:http Server, so one drain covers both. */
export interface Front {
  readonly address: string;
  readonly connections: number;
  /** Stop accepting; `done` runs once every client connection has closed. */
  close(done?: () => void): void;
  closeIdleConnections(): void;
  closeAllConnections(): void;
}

const HANDLERS = (ctx: FrontContext): SocketHandler<ClientConn> => ({
  open(s: Socket<ClientConn>) {
    s.data = new ClientConn(s, ctx);
  },
  data: (s, buf) => s.data.onData(buf),
  drain: (s) => s.data.onDrain(),
  timeout: (s) => s.data.onTimeout(),
  close: (s) => s.data?.onClose(),
  error: (s) => s.terminate(),
});

export function startFront(o: FrontOptions): Front {
  // A client that opens a connection per request would churn a Set (slots.ts).
  const conns = new SlotSet<ClientConn>();
  let onClosed: (() => void) | undefined;
  let stopped = false;
  const ctx: FrontContext = {
    homeserver: o.homeserver,
    app: o.app,
    intercepts: o.intercepts,
    syncGate: o.syncGate,
    access: o.access,
    idleSeconds: o.idleSeconds ?? IDLE_SECONDS,
    draining: false,
    forget(c) {
      conns.delete(c);
      if (stopped && conns.size === 0) finish();
    },
  };
  const handlers = HANDLERS(ctx);
  const open = handlers.open!;
  handlers.open = (s) => {
    void open(s);
    conns.add(s.data);
  };
  const where = parseListen(o.listen);
  // No allowHalfOpen: a client's FIN ends the connection and cancels its request in flight,
  // as node:http does (httpAllowHalfOpen is false there) and nginx does by default: a /sync
  // long-poll whose client left must not hold a homeserver connection.
  let address: string;
  let listener: { stop(closeActive?: boolean): void };
  if ("path" in where) {
    rmSync(where.path, { force: true });
    listener = Bun.listen<ClientConn>({ unix: where.path, socket: handlers });
    address = `unix:${where.path}`;
  } else {
    const l = Bun.listen<ClientConn>({
      hostname: where.host,
      port: where.port,
      socket: handlers,
      ...(o.reusePort ? { reusePort: true } : {}),
    });
    listener = l;
    address = where.host.includes(":") ? `[${where.host}]:${l.port}` : `${where.host}:${l.port}`;
  }

  function finish(): void {
    o.homeserver.pool.close();
    o.app.pool.close();
    const cb = onClosed;
    onClosed = undefined;
    cb?.();
  }

  return {
    address,
    get connections() {
      return conns.size;
    },
    close(done) {
      onClosed = done;
      if (!stopped) {
        stopped = true;
        ctx.draining = true;
        listener.stop(false);
      }
      conns.forEach((c) => c.closeIfIdle());
      if (conns.size === 0) finish();
    },
    closeIdleConnections() {
      conns.forEach((c) => c.idle && c.closeIfIdle());
    },
    closeAllConnections() {
      conns.forEach((c) => c.socket.terminate());
    },
  };
}
