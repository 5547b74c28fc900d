// The response half of an exchange: parse the next hop's head, relay interim responses, write
// the client's head with our own framing, then stream the body as it arrives.
import { type Body, responseBody } from "./framing.ts";
import { fieldValue, HeadError, headEnd, hasToken, MAX_HEAD_BYTES, parseResponseHead, type ResponseHead } from "./head.ts";
import { NAME } from "./names.ts";
import type { ClientSide } from "./hop.ts";
import { type ClientResponse, clientResponseHead, interimHead } from "./rewrite-head.ts";

export interface RelayRequest {
  client: ClientSide;
  method: string;
  minor: number;
  keepAlive: boolean;
  /** The request's body: a response that starts before it is complete closes the connection. */
  body: Body;
  requestId: string;
}

export interface RelayHooks {
  headArrived(): void;
  /** The response is complete; `reusable`: the hop's connection may serve another request. */
  complete(reusable: boolean): void;
  fail(status: number, message: string): void;
  pauseUpstream(): void;
}

export class ResponseRelay {
  /** Response bytes received from the hop so far. */
  bytes = 0;
  /** Status of the head sent to the client (undefined: none yet). */
  statusSent: number | undefined;
  /** May the client's connection carry another request after this response? */
  keepClient = false;
  /** The hop's connection is paused because the client has not taken what we sent. */
  upstreamPaused = false;
  readonly #r: RelayRequest;
  readonly #hooks: RelayHooks;
  #partial: Buffer | undefined;
  #body: Body | undefined;
  #dechunk = false;
  #hopKeepsAlive = false;
  #flowing = true;
  #head: ResponseHead | undefined;
  #headOptions: ClientResponse | undefined;

  constructor(r: RelayRequest, hooks: RelayHooks) {
    this.#r = r;
    this.#hooks = hooks;
  }

  /** A final response head has arrived (interim 1xx ones do not count). */
  get started(): boolean {
    return this.#body !== undefined;
  }

  onData(chunk: Buffer): void {
    this.bytes += chunk.length;
    let buf = chunk;
    let at = 0;
    if (this.#body === undefined) {
      const searchFrom = this.#partial ? Math.max(0, this.#partial.length - 3) : 0;
      if (this.#partial) buf = Buffer.concat([this.#partial, chunk]);
      this.#partial = undefined;
      let from = searchFrom;
      for (;;) {
        const end = headEnd(buf, at, from);
        if (end === -1) {
          if (buf.length - at > MAX_HEAD_BYTES) return this.#hooks.fail(502, "The response head is too large");
          this.#partial = buf.subarray(at);
          return;
        }
        let head: ResponseHead;
        try {
          head = parseResponseHead(buf, at, end);
        } catch (e) {
          return this.#hooks.fail(502, e instanceof HeadError ? e.message : "malformed response head");
        }
        at = end;
        from = end;
        if (head.status >= 200) {
          if (!this.#start(head)) return;
          break;
        }
        // 101 would switch protocols, but we never forward Upgrade (hop-by-hop).
        if (head.status === 101) return this.#hooks.fail(502, "unexpected 101 Switching Protocols");
        // 100 Continue, 103 Early Hints: relayed to HTTP/1.1 clients (RFC 9110 §15.2: a proxy
        // forwards 1xx responses unless the client is HTTP/1.0, which cannot receive them).
        if (this.#r.minor === 1) this.#r.client.send(interimHead(head));
      }
    }
    this.#feed(buf, at);
  }

  /** The hop closed its connection after the head. */
  onClose(): void {
    const body = this.#body!;
    if (body.kind === "close") this.#hooks.complete(false);
    else this.#hooks.fail(502, "The connection closed mid-response");
  }

  /** The client took everything queued: resume the flow. */
  resumed(): void {
    this.#flowing = true;
    this.upstreamPaused = false;
  }

  #start(head: ResponseHead): boolean {
    this.#hooks.headArrived();
    let body: Body;
    try {
      body = responseBody(this.#r.method, head);
    } catch (e) {
      this.#hooks.fail(502, e instanceof HeadError ? e.message : "bad response framing");
      return false;
    }
    const conn = fieldValue(head, NAME.CONNECTION);
    this.#hopKeepsAlive = !hasToken(conn, "close") && (head.minor === 1 || hasToken(conn, "keep-alive"));
    // HTTP/1.0 clients cannot read chunked framing (RFC 9112 §7.1): de-chunk and close instead.
    this.#dechunk = body.kind === "chunked" && this.#r.minor === 0;
    this.keepClient = this.#r.keepAlive && !this.#r.client.draining && body.kind !== "close" && !this.#dechunk && this.#r.body.done;
    // Held back to go out in one write with the first body bytes: a write is a system call,
    // and for small responses it is most of the relay's cost.
    this.#head = head;
    this.#headOptions = {
      chunked: body.kind === "chunked" && !this.#dechunk,
      connection: !this.keepClient ? "close" : this.#r.minor === 0 ? "keep-alive" : undefined,
      requestId: this.#r.requestId,
    };
    this.statusSent = head.status;
    this.#body = body;
    return true;
  }

  #feed(buf: Buffer, at: number): void {
    const body = this.#body!;
    if (this.#head && (this.#dechunk || at === buf.length)) this.#send(this.#takeHead());
    if (at < buf.length) {
      let end: number;
      try {
        if (this.#dechunk) end = body.feed(buf, at, buf.length, (b, s, e) => this.#send(s === 0 && e === b.length ? b : b.subarray(s, e)));
        else {
          end = body.feed(buf, at, buf.length);
          const stop = end === -1 ? buf.length : end;
          if (this.#head) this.#send(this.#takeHead(buf, at, stop));
          else if (stop > at) this.#send(at === 0 && stop === buf.length ? buf : buf.subarray(at, stop));
        }
      } catch (e) {
        return this.#hooks.fail(502, e instanceof HeadError ? e.message : "bad response body");
      }
      // Bytes after the response answer nothing we asked: the connection cannot be reused.
      if (end !== -1 && end < buf.length) this.#hopKeepsAlive = false;
    }
    if (body.done) this.#hooks.complete(this.#hopKeepsAlive);
    else if (!this.#flowing && !this.upstreamPaused) {
      this.upstreamPaused = true;
      this.#hooks.pauseUpstream();
    }
  }

  #send(b: Buffer): void {
    if (!this.#r.client.send(b)) this.#flowing = false;
  }

  /** The client's response head, with body[start, end) after it when given. */
  #takeHead(body?: Buffer, start?: number, end?: number): Buffer {
    const out = clientResponseHead(this.#head!, this.#headOptions!, body, start, end);
    this.#head = undefined;
    return out;
  }
}
