// Keep-alive connections to one next hop (the homeserver, or the app on its internal socket).
// A new TCP (and TLS) handshake per client request would dominate latency, so finished
// connections wait here and are reused last-in first-out: the most recently used one is the
// least likely to have been closed by the server's idle timeout.
import type { Socket, SocketHandler } from "bun";

export type Destination =
  | { hostname: string; port: number; tls?: { serverName?: string; ca?: string } }
  | { unix: string };

/** Whoever is using a connection: it gets the connection's events. */
export interface ConnOwner {
  onData(buf: Buffer): void;
  onDrain(): void;
  /** The connection is gone (closed by either side, or failed). */
  onClose(error?: Error): void;
}

export class Conn {
  socket!: Socket<Conn>;
  owner: ConnOwner | undefined;
  /** Served a request before: it may have been closed by the server meanwhile. */
  reused = false;
  closed = false;
  readonly pool: Pool;

  constructor(pool: Pool) {
    this.pool = pool;
  }

  /** Drop the connection at once: never to be reused (mid-message, or its owner went away). */
  destroy(): void {
    if (this.closed) return;
    this.#gone();
    this.socket?.terminate();
  }

  /** The socket closed or failed: tell the owner once. */
  gone(error?: Error): void {
    if (this.closed) return;
    const owner = this.#gone();
    owner?.onClose(error);
  }

  #gone(): ConnOwner | undefined {
    this.closed = true;
    this.pool.forget(this);
    const owner = this.owner;
    this.owner = undefined;
    return owner;
  }
}

const HANDLERS: SocketHandler<Conn> = {
  data(s, buf) {
    const c = s.data;
    // Bytes on an idle connection answer no request of ours: it can no longer be trusted.
    if (c.owner) c.owner.onData(buf);
    else c.destroy();
  },
  drain(s) {
    s.data.owner?.onDrain();
  },
  close(s, error) {
    s.data.gone(error);
  },
  error(s, error) {
    s.data.gone(error);
    s.terminate();
  },
  timeout(s) {
    // Only idle connections have a timeout set (a request in flight is never timed out here).
    if (!s.data.owner) s.data.destroy();
  },
  connectError() {
    // The promise returned by Bun.connect rejects; connect() reports it.
  },
};

export interface PoolOptions {
  /** Close a connection idle this long (seconds; Bun's socket timers tick every few seconds). */
  idleSeconds: number;
  maxIdle: number;
}

export class Pool {
  readonly destination: Destination;
  readonly #o: PoolOptions;
  #idle: Conn[] = [];
  #closed = false;

  constructor(destination: Destination, o: PoolOptions) {
    this.destination = destination;
    this.#o = o;
  }

  /** The most recently idled live connection, if any. */
  take(): Conn | undefined {
    for (let c = this.#idle.pop(); c !== undefined; c = this.#idle.pop()) {
      if (c.closed || c.socket.readyState !== 1) continue;
      c.socket.timeout(0);
      return c;
    }
    return undefined;
  }

  /**
   * Open a new connection; rejects with the system error (ECONNREFUSED, a TLS failure, …).
   * The app's unix socket refuses at once (EAGAIN) when its accept backlog is full, as a burst of
   * a thousand refreshes makes it; that socket is ours and known to be up, so a refusal there is
   * load, not absence: wait a moment and try again rather than answer 502.
   */
  async connect(owner: ConnOwner): Promise<Conn> {
    if (!("unix" in this.destination)) return this.#connectOnce(owner);
    for (let delay = 2, waited = 0; ; delay = Math.min(delay * 2, 100)) {
      try {
        return await this.#connectOnce(owner);
      } catch (e) {
        if (waited >= 5_000 || this.#closed) throw e;
        await Bun.sleep(delay);
        waited += delay;
      }
    }
  }

  async #connectOnce(owner: ConnOwner): Promise<Conn> {
    const conn = new Conn(this);
    conn.owner = owner;
    const d = this.destination;
    const socket =
      "unix" in d
        ? await Bun.connect<Conn>({ unix: d.unix, data: conn, socket: HANDLERS })
        : await Bun.connect<Conn>({
            hostname: d.hostname,
            port: d.port,
            data: conn,
            socket: HANDLERS,
            ...(d.tls ? { tls: { rejectUnauthorized: true, ...d.tls } } : {}),
          });
    conn.socket = socket;
    return conn;
  }

  /** A connection whose exchange ended cleanly (both messages complete) waits for the next one. */
  release(conn: Conn): void {
    conn.owner = undefined;
    if (conn.closed) return;
    if (this.#closed || this.#idle.length >= this.#o.maxIdle) {
      conn.destroy();
      return;
    }
    conn.reused = true;
    conn.socket.timeout(this.#o.idleSeconds);
    this.#idle.push(conn);
  }

  forget(conn: Conn): void {
    const i = this.#idle.indexOf(conn);
    if (i !== -1) this.#idle.splice(i, 1);
  }

  get idle(): number {
    return this.#idle.length;
  }

  /** Close idle connections; connections in use close when their exchange ends. */
  close(): void {
    this.#closed = true;
    for (const c of this.#idle.splice(0)) c.destroy();
  }
}
