// The response half of an exchange: parse the next hop's head, relay interim responses, write
// the client's head with our own framing, then stream the body as it arrives.
import { type Body, type OnData, responseBody } from "./framing.ts";
import {
  CONN_CLOSE,
  CONN_KEEP_ALIVE,
  CONN_UNSURE,
  connectionOptions,
  fieldCount,
  fieldValue,
  HeadError,
  headEnd,
  hasToken,
  MAX_HEAD_BYTES,
  parseResponseHead,
  type ResponseHead,
} from "./head.ts";
import { NAME } from "./names.ts";
import type { ClientSide } from "./hop.ts";
import { release } from "./flow.ts";
import { type ClientResponse, clientResponseHead, interimHead } from "./rewrite-head.ts";
import type { BodySplice } from "../../delivery/json/sync-splice.ts";

const CRLF = Buffer.from("\r\n");
const LAST_CHUNK = Buffer.from("0\r\n\r\n");
/** A spliced part this large is written as it is rather than copied into one buffer with the rest. */
const WRITE_AS_IS = 16 * 1024;
const asBuffer = (b: Uint8Array): Buffer =>
  b instanceof Buffer ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);

export interface RelayRequest {
  client: ClientSide;
  method: string;
  minor: number;
  keepAlive: boolean;
  /** The request's body: a response that starts before it is complete closes the connection. */
  body: Body;
  requestId: string;
  /** Gives the reader of a 200's uncompressed payload as it streams past (the bytes go out
   *  unchanged): asked only once such a head arrives, so a held long-poll carries no reader. */
  observe?: BodyWatch;
  /** Rewrites a 200's uncompressed payload as it streams (/sync injection). */
  splice?: () => BodySplice;
}

export interface BodyObserver {
  /** True when it keeps `buf` by reference: the read is then not released once sent. */
  data(buf: Buffer, start: number, end: number): boolean;
  /** The whole body went past. */
  end(): void;
}

export interface BodyWatch {
  observer(): BodyObserver | undefined;
}

export interface RelayHooks {
  headArrived(): void;
  /** The response is complete; `reusable`: the hop's connection may serve another request. */
  complete(reusable: boolean): void;
  fail(status: number, message: string): void;
  pauseUpstream(): void;
}

/** May the hop's connection carry another request after this response? (RFC 9112 §9.3) */
function hopKeepsAlive(head: ResponseHead): boolean {
  const o = connectionOptions(head);
  if ((o & CONN_UNSURE) === 0) {
    if ((o & CONN_CLOSE) !== 0) return false;
    return head.minor === 1 || ((o & CONN_KEEP_ALIVE) !== 0 && fieldCount(head, NAME.TRANSFER_ENCODING) === 0);
  }
  const conn = fieldValue(head, NAME.CONNECTION);
  return (
    !hasToken(conn, "close") &&
    (head.minor === 1 || (hasToken(conn, "keep-alive") && fieldValue(head, NAME.TRANSFER_ENCODING) === undefined))
  );
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
  #observer: BodyObserver | undefined;
  /** Payload ranges of the chunk in hand, for the observer: [start, end, start, end, …]. */
  #spans: number[] | undefined;
  #splice: SplicedBody | undefined;

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
    if (body.kind === "close") {
      this.#observer?.end();
      if (this.#splice) this.#endSplice();
      this.#hooks.complete(false);
    } else this.#hooks.fail(502, "The connection closed mid-response");
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
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing, and the
    // connection closes after it: a body we did not read (a HEAD's answer) could still follow.
    this.#hopKeepsAlive = hopKeepsAlive(head);
    // A compressed body (the homeserver ignored our identity request) is not ours to read.
    const readable = head.status === 200 && fieldValue(head, NAME.CONTENT_ENCODING) === undefined;
    const splicing = this.#r.splice !== undefined && readable;
    // A spliced body changes length on the way: it goes out chunked, whatever its framing was.
    const chunked = body.kind === "chunked" || splicing;
    // HTTP/1.0 clients cannot read chunked framing (RFC 9112 §7.1): de-chunk and close instead.
    this.#dechunk = chunked && this.#r.minor === 0;
    this.keepClient =
      this.#r.keepAlive && !this.#r.client.draining && body.kind !== "close" && !this.#dechunk && this.#r.body.done;
    // Held back to go out in one write with the first body bytes: a write is a system call,
    // and for small responses it is most of the relay's cost.
    this.#head = head;
    this.#headOptions = {
      chunked: chunked && !this.#dechunk,
      reframed: splicing,
      connection: !this.keepClient ? "close" : this.#r.minor === 0 ? "keep-alive" : undefined,
      requestId: this.#r.requestId,
    };
    this.#body = body;
    if (splicing) this.#splice = new SplicedBody(this.#r.splice!());
    else if (this.#r.observe && readable) {
      this.#observer = this.#r.observe.observer();
      if (this.#observer) this.#spans = [];
    }
    return true;
  }

  #feed(buf: Buffer, at: number): void {
    if (this.#splice) return this.#spliceBody(buf, at);
    const body = this.#body!;
    if (this.#head && at === buf.length) this.#send(this.#takeHead());
    if (at < buf.length) {
      let end: number;
      try {
        const seen = this.#observer;
        if (this.#dechunk) {
          end = body.feed(buf, at, buf.length, (b, s, e) => {
            seen?.data(b, s, e);
            // The head goes with the first payload: framing broken before any is still a 502.
            if (this.#head) this.#send(this.#takeHead());
            this.#send(s === 0 && e === b.length ? b : b.subarray(s, e));
          });
          if (this.#head) this.#send(this.#takeHead());
        } else {
          const spans = this.#spans;
          end = body.feed(buf, at, buf.length, spans && ((_b, s, e) => void spans.push(s, e)));
          const stop = end === -1 ? buf.length : end;
          // The whole read went to the kernel: its memory can be freed now (flow.ts release).
          let whole = false;
          if (this.#head) this.#send(this.#takeHead(buf, at, stop));
          else if (at === 0 && stop === buf.length) whole = this.#send(buf);
          else if (stop > at) this.#send(buf.subarray(at, stop));
          // Read after sending: the client's bytes do not wait for our look at them.
          if (spans) {
            let kept = false;
            for (let k = 0; k < spans.length; k += 2) kept = seen!.data(buf, spans[k]!, spans[k + 1]!) || kept;
            spans.length = 0;
            if (kept) whole = false;
          }
          if (whole) release(buf);
        }
      } catch (e) {
        return this.#hooks.fail(502, e instanceof HeadError ? e.message : "bad response body");
      }
      // Bytes after the response answer nothing we asked: the connection cannot be reused.
      if (end !== -1 && end < buf.length) this.#hopKeepsAlive = false;
    }
    if (body.done) {
      this.#observer?.end();
      this.#hooks.complete(this.#hopKeepsAlive);
    } else if (!this.#flowing && !this.upstreamPaused) {
      this.upstreamPaused = true;
      this.#hooks.pauseUpstream();
    }
  }

  #spliceBody(buf: Buffer, at: number): void {
    const body = this.#body!;
    try {
      const end = body.feed(buf, at, buf.length, this.#splice!.payload);
      this.#splice!.fed();
      if (end !== -1 && end < buf.length) this.#hopKeepsAlive = false;
    } catch (e) {
      return this.#hooks.fail(502, e instanceof HeadError ? e.message : "bad response body");
    }
    if (body.done) {
      this.#endSplice();
      return this.#hooks.complete(this.#hopKeepsAlive);
    }
    this.#sendSpliced(false);
    if (!this.#flowing && !this.upstreamPaused) {
      this.upstreamPaused = true;
      this.#hooks.pauseUpstream();
    }
  }

  #endSplice(): void {
    const splice = this.#splice!;
    splice.end();
    this.#sendSpliced(true);
    splice.settle();
  }

  /** One write for the read in hand: the head if not yet sent, the splice's output as a chunk. */
  #sendSpliced(last: boolean): void {
    const chunked = this.#headOptions!.chunked;
    const { parts: body, bytes } = this.#splice!.take();
    if (bytes === 0 && !this.#head && !(last && chunked)) return;
    const parts: Uint8Array[] = [];
    if (this.#head) parts.push(this.#takeHead());
    if (chunked && bytes > 0) parts.push(Buffer.from(`${bytes.toString(16)}\r\n`), ...body, CRLF);
    else parts.push(...body);
    if (last && chunked) parts.push(LAST_CHUNK);
    // Small parts go out gathered in one write; a large one (most of a read, passed on as it
    // came) as the view it is: copying it cost as much as the splice's own look at the bytes.
    let from = 0;
    for (let i = 0; i <= parts.length; i++) {
      const big = i < parts.length && parts[i]!.length >= WRITE_AS_IS;
      if (i < parts.length && !big) continue;
      if (i > from) {
        const out = i - from === 1 ? asBuffer(parts[from]!) : Buffer.concat(parts.slice(from, i));
        if (this.#send(out) && i - from > 1) release(out);
      }
      if (big) this.#send(asBuffer(parts[i]!));
      from = i + 1;
    }
  }

  /** True when everything is already with the kernel. */
  #send(b: Buffer): boolean {
    if (this.#r.client.send(b)) return true;
    this.#flowing = false;
    return false;
  }

  /** The client's response head, with body[start, end) after it when given. */
  #takeHead(body?: Buffer, start?: number, end?: number): Buffer {
    const out = clientResponseHead(this.#head!, this.#headOptions!, body, start, end);
    // Only now: broken framing found in the read that brought the head leaves the client owed
    // a 502 (exchange.ts fail), not a cut with nothing sent.
    this.statusSent = this.#head!.status;
    this.#head = undefined;
    return out;
  }
}

// Only exchanges that splice make one: its fields and bound functions would otherwise sit in
// every held long-poll (docs/performance.md, idle long-polls).
class SplicedBody {
  readonly #splice: BodySplice;
  /** What the splice put out for the read in hand. */
  #out: Uint8Array[] = [];
  #bytes = 0;
  readonly #collect = (b: Uint8Array, s: number, e: number): void => {
    this.#out.push(b.subarray(s, e));
    this.#bytes += e - s;
  };
  // The payload of the read in hand: a chunked body (Synapse writes /sync in 4 KiB chunks) gives
  // one piece per chunk, and each piece fed alone cost the splice's search and the readers' more
  // in calls than in bytes (docs/performance.md, eighth session). They are fed as one.
  #pieces: Buffer[] = [];
  #pieceBytes = 0;
  readonly payload: OnData = (b, s, e) => {
    this.#pieces.push(s === 0 && e === b.length ? b : b.subarray(s, e));
    this.#pieceBytes += e - s;
  };

  constructor(splice: BodySplice) {
    this.#splice = splice;
  }

  /** The read's payload went past: the splice gets it, in one piece (copied, when it came in several). */
  fed(): void {
    const pieces = this.#pieces;
    if (pieces.length === 0) return;
    const joined = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, this.#pieceBytes);
    this.#pieces = [];
    this.#pieceBytes = 0;
    this.#splice.feed(joined, 0, joined.length, this.#collect);
  }

  end(): void {
    this.#splice.end(this.#collect);
  }

  settle(): void {
    this.#splice.settle();
  }

  /** The output so far, as views: copy it before the next read. */
  take(): { parts: Uint8Array[]; bytes: number } {
    const taken = { parts: this.#out, bytes: this.#bytes };
    this.#out = [];
    this.#bytes = 0;
    return taken;
  }
}
