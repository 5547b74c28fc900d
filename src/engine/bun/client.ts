// One client connection: read request heads, relay each request to its next hop, answer
// pipelined requests in order (one exchange at a time, later bytes wait here), keep-alive.
import type { Socket } from "bun";
import type { Slotted } from "./slots.ts";
import { dispatch, type FrontContext, type Route, routeOf } from "./dispatch.ts";
import { Outbox } from "./flow.ts";
import { type Body, requestBody } from "./framing.ts";
import { fieldCount, HeadError, headEnd, MAX_HEAD_BYTES, parseRequestHead, type RequestHead } from "./head.ts";
import type { ClientSide } from "./hop.ts";
import { NAME } from "./names.ts";
import { errorResponse } from "./rewrite-head.ts";

// Slowloris: a request head must be complete within this (node's headersTimeout in listen.ts).
const HEAD_TIMEOUT_MS = 60_000;
const LF_LF = Buffer.from("\n\n");

/** What is in flight on a connection: an exchange, or a /sync whose route is being decided. */
interface InFlight {
  readonly wantsBody: boolean;
  clientBody(buf: Buffer, start: number, end: number): number;
  onClientDrain(): void;
  abort(): void;
  /** Answer `status` in place of the response if none has started, else cut the connection. */
  fail(status: number, message: string): void;
}

// A /sync waiting for its token lookup (sync-gate.ts): it has no body, and nothing to cancel.
const deciding = (): InFlight => ({
  wantsBody: false,
  clientBody: () => -1,
  onClientDrain() {},
  abort() {},
  fail() {},
});

export class ClientConn implements ClientSide, Slotted {
  /** Its place among the front end's connections (server.ts). */
  slot = -1;
  readonly socket: Socket<ClientConn>;
  /** The client's address, as the socket reports it. */
  readonly peer: string;
  readonly #ctx: FrontContext;
  readonly #out = new Outbox();
  #buf: Buffer | undefined;
  #active: InFlight | undefined;
  #paused = false;
  #closing = false;
  #closed = false;
  #headTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(socket: Socket<ClientConn>, ctx: FrontContext) {
    this.socket = socket;
    this.#ctx = ctx;
    this.peer = socket.remoteAddress;
    socket.timeout(ctx.idleSeconds);
  }

  get draining(): boolean {
    return this.#ctx.draining;
  }

  /** Between requests: nothing in flight, nothing received. */
  get idle(): boolean {
    return this.#active === undefined;
  }

  onData(chunk: Buffer): void {
    if (this.#closing) return;
    let c = chunk;
    const ex = this.#active;
    if (ex?.wantsBody) {
      let stop: number;
      try {
        stop = ex.clientBody(c, 0, c.length);
      } catch (e) {
        // Broken chunked framing mid-body: the request cannot be completed or delimited. The
        // client still hears why, as when the same bytes come in the head's read.
        ex.fail(e instanceof HeadError ? e.status : 400, e instanceof HeadError ? e.message : "Bad request body");
        return;
      }
      if (stop === -1) return;
      c = c.subarray(stop);
      if (c.length === 0) return;
    }
    this.#buf = this.#buf ? Buffer.concat([this.#buf, c]) : c;
    if (this.#active) {
      // Pipelined requests wait for the one in flight; stop reading if they pile up.
      if (this.#buf.length > MAX_HEAD_BYTES) this.pauseReading();
      return;
    }
    this.#next();
  }

  onDrain(): void {
    if (!this.#out.flush(this.socket)) return;
    if (this.#closing) this.socket.end();
    else this.#active?.onClientDrain();
  }

  onTimeout(): void {
    if (!this.#active) this.socket.end();
  }

  onClose(): void {
    this.#closed = true;
    clearTimeout(this.#headTimer);
    const ex = this.#active;
    this.#active = undefined;
    this.#buf = undefined;
    this.#out.clear();
    ex?.abort(); // a client that goes away cancels its upstream request
    this.#ctx.forget(this);
  }

  /** Draining: close now if no request is in flight; otherwise after its response. */
  closeIfIdle(): void {
    if (!this.#active) this.#endAfterFlush();
  }

  // ClientSide, for the exchange in flight.
  send(buf: Buffer): boolean {
    if (this.#closed) return true;
    return this.#out.send(this.socket, buf);
  }

  pauseReading(): void {
    if (this.#paused) return;
    this.#paused = true;
    this.socket.pause();
  }

  resumeReading(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.socket.resume();
  }

  done(keep: boolean): void {
    this.#active = undefined;
    if (this.#closed) return;
    if (!keep || this.#ctx.draining) return this.#endAfterFlush();
    this.socket.timeout(this.#ctx.idleSeconds);
    this.resumeReading();
    if (this.#buf) this.#next();
  }

  cut(): void {
    this.#active = undefined;
    this.#closing = true;
    this.#out.clear();
    this.socket.end();
  }

  #next(): void {
    while (!this.#active && this.#buf && !this.#closing) {
      const buf = this.#buf;
      let start = 0;
      // RFC 9112 §2.2: a server SHOULD ignore empty lines received before a request line.
      while (start + 1 < buf.length && buf[start] === 13 && buf[start + 1] === 10) start += 2;
      const end = headEnd(buf, start);
      if (end === -1) {
        if (buf.length - start > MAX_HEAD_BYTES) return this.#reject(431, "Request head too large");
        // A head ended by bare LFs (a hand-typed request) would otherwise wait out the head
        // timeout with no answer. RFC 9112 §2.2 allows refusing them; we do, at once.
        if (buf.includes(LF_LF, start)) return this.#reject(400, "Line endings must be CRLF");
        this.#buf = start === buf.length ? undefined : start > 0 ? buf.subarray(start) : buf;
        if (this.#buf) this.#headTimer ??= setTimeout(() => this.socket.terminate(), HEAD_TIMEOUT_MS);
        break;
      }
      if (end - start > MAX_HEAD_BYTES) return this.#reject(431, "Request head too large");
      clearTimeout(this.#headTimer);
      this.#headTimer = undefined;
      this.#buf = undefined;
      let head: RequestHead;
      let body: Body;
      let method: string | undefined;
      try {
        head = parseRequestHead(buf, start, end);
        method = head.method;
        // RFC 9112 §3.2: exactly one Host in an HTTP/1.1 request, else 400.
        const hosts = fieldCount(head, NAME.HOST);
        if (hosts > 1 || (hosts === 0 && head.minor === 1))
          throw new HeadError(400, "an HTTP/1.1 request needs one Host header");
        body = requestBody(head);
        this.socket.timeout(0); // a request in flight has no idle limit: a long-poll is silent
        const to = routeOf(this.#ctx, head, body);
        if (to instanceof Promise) {
          // Only a bodiless GET /sync gets here: the bytes after its head are the next request.
          const waiting = deciding();
          this.#active = waiting;
          if (end < buf.length) this.#buf = buf.subarray(end);
          void to.then((route) => {
            if (this.#active !== waiting) return; // the client left meanwhile
            try {
              this.#begin(head, body, buf, end, route);
            } catch {
              this.cut();
            }
          });
          return;
        }
        const bodyEnd = this.#begin(head, body, buf, end, to);
        if (bodyEnd < buf.length) this.#buf = buf.subarray(bodyEnd);
      } catch (e) {
        return this.#reject(
          e instanceof HeadError ? e.status : 400,
          e instanceof HeadError ? e.message : "Bad request",
          method,
        );
      }
    }
  }

  /** Start the exchange; returns where this request's bytes end in buf. */
  #begin(head: RequestHead, body: Body, buf: Buffer, end: number, to: Route): number {
    const { exchange, bodyEnd } = dispatch(this.#ctx, this, head, body, buf, end, to);
    this.#active = exchange;
    exchange.start();
    return bodyEnd;
  }

  #reject(status: number, message: string, method?: string): void {
    clearTimeout(this.#headTimer);
    this.#buf = undefined;
    this.send(
      errorResponse(status, message, this.#ctx.access.requestId(undefined, this.peer), "close", method === "HEAD"),
    );
    this.#endAfterFlush();
  }

  #endAfterFlush(): void {
    if (this.#closing || this.#closed) return;
    this.#closing = true;
    if (this.#out.bytes === 0) this.socket.end();
  }
}
