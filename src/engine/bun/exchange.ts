// One request relayed to a next hop and its response relayed back, as bytes, both streaming
// with backpressure. Same semantics as the node:http path (passthrough.ts, upstream.ts).
import { cancelExpiry, type Expiring, expireIn } from "./deadlines.ts";
import type { Body } from "./framing.ts";
import { Outbox, release } from "./flow.ts";
import type { Conn, ConnOwner } from "./pool.ts";
import { type BodyWatch, type RelayHooks, ResponseRelay } from "./response.ts";
import type { ClientSide, Hop } from "./hop.ts";
import { jsonResponse, type Persistence } from "./rewrite-head.ts";
import type { LongPoll } from "./sync-gate.ts";
import type { BodySplice } from "../../delivery/json/sync-splice.ts";

// RFC 9110 §9.2.2: requests whose repetition has the same effect. Only these are retried on a
// fresh connection when a reused one closes before answering (§9.2.2: a proxy MUST NOT retry
// a non-idempotent request automatically), and only when we still hold the whole message.
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

export interface ExchangeInit {
  hop: Hop;
  client: ClientSide;
  method: string;
  target: string;
  /** Client's HTTP minor version (0: no chunked responses, no interim responses). */
  minor: number;
  /** The client wants the connection kept (and we are not draining). */
  keepAlive: boolean;
  body: Body;
  /** The request head for the hop, plus the body bytes already received. */
  first: Buffer;
  requestId: string;
  /** Told when the response head arrives and when the exchange is over (the access log). */
  record?: ExchangeRecord;
  /** Gives the reader of the response body as it streams past (response.ts). */
  observe?: BodyWatch;
  /** Rewrites a 200's body as it streams (response.ts). */
  splice?: () => BodySplice;
  /** A long-poll a refresh may answer early (sync-gate.ts). */
  longPoll?: LongPoll;
}

export interface ExchangeRecord {
  /** The response head arrived (pass-through: upstream latency). */
  head(): void;
  /** Called once when the exchange is over, with the status sent (undefined: none). */
  end(status: number | undefined, aborted: boolean): void;
}

export class Exchange implements ConnOwner, RelayHooks, Expiring {
  // Its place among the pending deadlines (deadlines.ts).
  slot = -1;
  deadlineAt = 0;
  readonly #i: ExchangeInit;
  readonly #up = new Outbox();
  readonly #res: ResponseRelay;
  #conn: Conn | undefined;
  #retried = false;
  #over = false;
  #clientPaused = false;
  /** The whole request is in `first`: it can be sent again. */
  readonly #whole: boolean;

  constructor(i: ExchangeInit) {
    this.#i = i;
    this.#whole = i.body.done;
    this.#res = new ResponseRelay(i, this);
  }

  /** The request body still has bytes to come from the client. */
  get wantsBody(): boolean {
    return !this.#i.body.done;
  }

  start(): void {
    const ms = this.#i.hop.headerTimeoutMs(this.#i.target);
    // The timeout covers the wait for the response head only: once it arrives, a slow body
    // (a /sync streaming megabytes) is governed by the client, never cut by us.
    if (ms !== undefined) expireIn(this, ms);
    this.#i.longPoll?.hold(this);
    const pooled = this.#i.hop.pool.take();
    if (pooled) {
      this.#attach(pooled);
      this.#up.send(pooled.socket, this.#i.first);
    } else {
      this.#up.send(undefined, this.#i.first); // sent once connected
      this.#connect();
    }
  }

  /** The header timeout passed. */
  expire(): void {
    this.fail(504, `The ${this.#i.hop.name} did not answer in time`);
  }

  #connect(): void {
    this.#i.hop.pool.connect(this).then(
      (conn) => {
        if (this.#over) conn.destroy();
        else this.#attach(conn);
      },
      (e: NodeJS.ErrnoException) => this.fail(502, `The ${this.#i.hop.name} is unreachable (${e.code ?? e.message})`),
    );
  }

  #attach(conn: Conn): void {
    this.#conn = conn;
    conn.owner = this;
    this.onDrain();
  }

  /** Body bytes from the client: returns the index just past the body's end, or -1. */
  clientBody(buf: Buffer, start: number, end: number): number {
    const stop = this.#i.body.feed(buf, start, end);
    const upto = stop === -1 ? end : stop;
    if (upto <= start || this.#over) return stop;
    // A read that is body from end to end, and went to the kernel whole, is freed at once.
    const whole = stop === -1 && start === 0 && end === buf.length;
    if (this.#up.send(this.#conn?.socket, whole ? buf : buf.subarray(start, upto))) {
      if (whole) release(buf);
    } else if (!this.#clientPaused) {
      this.#clientPaused = true;
      this.#i.client.pauseReading();
    }
    return stop;
  }

  /** The client took what we queued for it: read from the hop again. */
  onClientDrain(): void {
    if (this.#over || !this.#res.upstreamPaused) return;
    this.#res.resumed();
    this.#conn?.socket.resume();
  }

  /** The client went away: the hop's connection is closed, never reused. */
  abort(): void {
    if (this.#over) return;
    this.#end(this.#res.statusSent, true);
    this.#conn?.destroy();
  }

  // ConnOwner: events of the hop's connection.
  onData(buf: Buffer): void {
    if (!this.#over) this.#res.onData(buf);
  }

  onDrain(): void {
    const conn = this.#conn;
    if (!conn || this.#over || !this.#up.flush(conn.socket)) return;
    if (this.#clientPaused) {
      this.#clientPaused = false;
      this.#i.client.resumeReading();
    }
  }

  onClose(error?: Error): void {
    if (this.#over) return;
    const conn = this.#conn;
    this.#conn = undefined;
    if (!this.#res.started) {
      // A reused connection the server closed while idle, just as we sent: a race every
      // keep-alive client meets (RFC 9112 §9.3.1). Send again once on a fresh connection.
      if (conn?.reused && !this.#retried && this.#res.bytes === 0 && this.#whole && IDEMPOTENT.has(this.#i.method)) {
        this.#retried = true;
        this.#up.clear();
        this.#up.send(undefined, this.#i.first);
        this.#connect();
        return;
      }
      const why = error ? ` (${(error as NodeJS.ErrnoException).code ?? error.message})` : "";
      this.fail(502, `The ${this.#i.hop.name} closed the connection without answering${why}`);
      return;
    }
    this.#res.onClose();
  }

  // RelayHooks: the response relay reports here.
  headArrived(): void {
    cancelExpiry(this);
    this.#i.record?.head();
  }

  pauseUpstream(): void {
    this.#conn?.socket.pause();
  }

  complete(reusable: boolean): void {
    const conn = this.#conn;
    // Reuse needs both messages complete: a request body still arriving would be read as the
    // next request.
    if (conn && reusable && this.#i.body.done && !this.#up.bytes) {
      if (this.#res.upstreamPaused) conn.socket.resume();
      this.#conn = undefined;
      this.#i.hop.pool.release(conn);
    } else conn?.destroy();
    const keep = this.#res.keepClient;
    this.#end(this.#res.statusSent, false);
    this.#i.client.done(keep);
  }

  fail(status: number, message: string): void {
    if (this.#over) return;
    this.#conn?.destroy();
    if (this.#res.statusSent !== undefined) {
      // The head is out: all we can do is end the connection, so the client sees the cut.
      this.#end(this.#res.statusSent, true);
      this.#i.client.cut();
      return;
    }
    const keep = this.#keepAfterOwnAnswer();
    this.#i.client.send(
      this.#i.hop.errorResponse(status, message, this.#i.requestId, this.#persistence(keep), this.#i.method === "HEAD"),
    );
    this.#end(status, false);
    this.#i.client.done(keep);
  }

  // A refresh landed for this long-poll's device: if the homeserver has not started answering,
  // stop waiting for it and answer now. Once its answer streams, that answer goes out whole
  // and the delivery waits for the next poll.
  wake(): void {
    const poll = this.#i.longPoll;
    if (this.#over || this.#res.statusSent !== undefined || !poll) return;
    const body = poll.wakeBody();
    if (typeof body === "string") return this.#answerWake(body);
    // The body is booked in the store first (its token acknowledges what it carries); the
    // homeserver's answer may begin meanwhile, and then goes out instead.
    body.then(
      (b) => this.#answerWake(b),
      () => {},
    );
  }

  #answerWake(body: string): void {
    if (this.#over || this.#res.statusSent !== undefined) return;
    this.#conn?.destroy();
    const keep = this.#keepAfterOwnAnswer();
    this.#i.client.send(jsonResponse(200, body, this.#i.requestId, this.#persistence(keep)));
    this.#end(200, false);
    this.#i.client.done(keep);
  }

  // After an answer of our own. The request's own bytes may still be arriving: the connection
  // cannot carry another.
  #keepAfterOwnAnswer(): boolean {
    return this.#i.keepAlive && this.#i.body.done;
  }

  #persistence(keep: boolean): Persistence {
    return !keep ? "close" : this.#i.minor === 0 ? "keep-alive" : undefined;
  }

  #end(status: number | undefined, aborted: boolean): void {
    this.#over = true;
    this.#i.longPoll?.release(this);
    cancelExpiry(this);
    this.#up.clear();
    this.#i.record?.end(status, aborted);
  }
}
