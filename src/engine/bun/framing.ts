// Message body framing (RFC 9112 §6): where a body ends. Bodies are relayed as bytes; chunked
// framing is followed only far enough to find the last chunk, and passed on verbatim.
import {
  digitsField,
  fieldValue,
  HeadError,
  hasToken,
  MAX_HEAD_BYTES,
  type RequestHead,
  type ResponseHead,
} from "./head.ts";
import { NAME } from "./names.ts";

/** Receives the payload bytes buf[start, end) of a chunked body (to de-chunk it). */
export type OnData = (buf: Buffer, start: number, end: number) => void;

export interface Body {
  /** "close": the body ends when the connection does (a response without a length). */
  readonly kind: "none" | "length" | "chunked" | "close";
  readonly done: boolean;
  /**
   * Take the bytes of buf[start, end) that belong to this body. Returns the index just past the
   * body's last byte when the body ends inside the range, else -1 (all of it was body).
   */
  feed(buf: Buffer, start: number, end: number, onData?: OnData): number;
}

class NoBody implements Body {
  readonly kind = "none";
  readonly done = true;
  feed(_b: Buffer, start: number): number {
    return start;
  }
}

/** No body: it holds no state, so every message without one shares it. */
const NO_BODY: Body = new NoBody();

class LengthBody implements Body {
  readonly kind = "length";
  #left: number;
  constructor(length: number) {
    this.#left = length;
  }
  get done(): boolean {
    return this.#left === 0;
  }
  feed(buf: Buffer, start: number, end: number, onData?: OnData): number {
    const take = Math.min(this.#left, end - start);
    this.#left -= take;
    if (take > 0) onData?.(buf, start, start + take);
    return this.#left === 0 ? start + take : -1;
  }
}

class CloseBody implements Body {
  readonly kind = "close";
  readonly done = false;
  feed(buf: Buffer, start: number, end: number, onData?: OnData): number {
    if (end > start) onData?.(buf, start, end);
    return -1;
  }
}

// Chunked parser states (RFC 9112 §7.1): size, extension, LF after size, data, CRLF after data,
// trailer lines.
const SIZE = 0,
  EXT = 1,
  SIZE_LF = 2,
  DATA = 3,
  DATA_CR = 4,
  DATA_LF = 5,
  LINE_START = 6,
  LINE = 7,
  LINE_LF = 8,
  END_LF = 9,
  DONE = 10;
const CR = 13,
  LF = 10;

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

export class ChunkedBody implements Body {
  readonly kind = "chunked";
  #state = SIZE;
  #size = 0;
  #digits = 0;
  #trailerBytes = 0;
  readonly #errorStatus: number;

  /** `errorStatus`: 400 for a client's body, 502 for the homeserver's. */
  constructor(errorStatus: number) {
    this.#errorStatus = errorStatus;
  }
  get done(): boolean {
    return this.#state === DONE;
  }
  #fail(what: string): never {
    throw new HeadError(this.#errorStatus, `bad chunked framing: ${what}`);
  }

  feed(buf: Buffer, start: number, end: number, onData?: OnData): number {
    let i = start;
    while (i < end) {
      if (this.#state === DATA) {
        const take = Math.min(this.#size, end - i);
        if (onData) onData(buf, i, i + take);
        this.#size -= take;
        i += take;
        if (this.#size === 0) this.#state = DATA_CR;
        continue;
      }
      const c = buf[i++]!;
      switch (this.#state) {
        case SIZE: {
          const h = hexValue(c);
          if (h >= 0) {
            // 12 hex digits is 256 TiB: beyond that a size could overflow exact integers.
            if (++this.#digits > 12) this.#fail("chunk size too large");
            this.#size = this.#size * 16 + h;
          } else if (this.#digits === 0) this.#fail("missing chunk size");
          else if (c === CR) this.#state = SIZE_LF;
          else if (c === 59 /* ; */ || c === 32 || c === 9) this.#state = EXT;
          else this.#fail("bad chunk size");
          break;
        }
        case EXT: // chunk extensions are ignored (§7.1.1) but must stay on one line
          if (c === CR) this.#state = SIZE_LF;
          else if (c === LF || c === 0) this.#fail("bad chunk extension");
          if (++this.#trailerBytes > MAX_HEAD_BYTES) this.#fail("chunk extension too long");
          break;
        case SIZE_LF:
          if (c !== LF) this.#fail("expected LF after chunk size");
          this.#state = this.#size === 0 ? LINE_START : DATA;
          this.#digits = 0;
          this.#trailerBytes = 0; // the limit is per line of extensions, not per body
          break;
        case DATA_CR:
          if (c !== CR) this.#fail("expected CRLF after chunk data");
          this.#state = DATA_LF;
          break;
        case DATA_LF:
          if (c !== LF) this.#fail("expected CRLF after chunk data");
          this.#state = SIZE;
          break;
        case LINE_START: // after the last chunk: trailer fields, then an empty line
          if (c === CR) this.#state = END_LF;
          else if (c === LF) this.#fail("bare LF in trailer");
          else this.#state = LINE;
          break;
        case LINE:
          if (c === CR) this.#state = LINE_LF;
          else if (c === LF) this.#fail("bare LF in trailer");
          if (++this.#trailerBytes > MAX_HEAD_BYTES) this.#fail("trailer section too large");
          break;
        case LINE_LF:
          if (c !== LF) this.#fail("expected LF in trailer");
          this.#state = LINE_START;
          break;
        case END_LF:
          if (c !== LF) this.#fail("expected LF after last chunk");
          this.#state = DONE;
          return i;
      }
    }
    return -1;
  }
}

// OWS is SP and HTAB only (RFC 9110 §5.6.3): String.trim() would also take a NBSP (0xA0), so
// "3\xA0" would pass as a length, or "chunked\xA0" as chunked, which a stricter hop refuses.
const trimOws = (s: string) => s.replace(/^[ \t]+|[ \t]+$/g, "");

function contentLength(h: RequestHead | ResponseHead, errorStatus: number): number | undefined {
  const n = digitsField(h, NAME.CONTENT_LENGTH); // the usual case: one field, one number
  if (n >= 0) return n;
  const v = fieldValue(h, NAME.CONTENT_LENGTH);
  if (v === undefined) return undefined;
  // RFC 9110 §8.6: repeated fields with one identical value are allowed; anything else is an
  // unrecoverable framing error (RFC 9112 §6.3 item 5).
  const parts = v.split(",").map(trimOws);
  if (!parts.every((p) => p === parts[0]) || !/^\d{1,15}$/.test(parts[0]!))
    throw new HeadError(errorStatus, "invalid Content-Length");
  return Number(parts[0]);
}

/** How a request's body is framed (RFC 9112 §6.3 items 3–6); refuses ambiguous framing. */
export function requestBody(h: RequestHead): Body {
  const te = fieldValue(h, NAME.TRANSFER_ENCODING);
  if (te !== undefined) {
    // A request carrying both is the request-smuggling pattern (RFC 9112 §6.3 item 3, §11.2):
    // refuse it rather than pick one reading that the homeserver might not share.
    if (fieldValue(h, NAME.CONTENT_LENGTH) !== undefined)
      throw new HeadError(400, "both Content-Length and Transfer-Encoding");
    if (h.minor === 0) throw new HeadError(400, "Transfer-Encoding in an HTTP/1.0 request");
    if (trimOws(te).toLowerCase() !== "chunked") {
      // Chunked must be the final coding (§6.3 item 4); other codings we cannot frame.
      throw hasToken(te, "chunked")
        ? new HeadError(400, "chunked is not the final transfer coding")
        : new HeadError(501, "unsupported transfer coding");
    }
    return new ChunkedBody(400);
  }
  const length = contentLength(h, 400);
  return length === undefined || length === 0 ? NO_BODY : new LengthBody(length);
}

/** How a response to `method` is framed (RFC 9112 §6.3 items 1–2, 5–7); refuses ambiguous framing. */
export function responseBody(method: string, h: ResponseHead): Body {
  if (method === "HEAD" || h.status < 200 || h.status === 204 || h.status === 304) return NO_BODY;
  const te = fieldValue(h, NAME.TRANSFER_ENCODING);
  if (te !== undefined) {
    // Both is the response-splitting pattern (RFC 9112 §6.3 item 3), and Transfer-Encoding in
    // HTTP/1.0 is faulty framing (§6.1): a hop that framed it otherwise has bytes left for the
    // next request on a pooled connection. Refused as requestBody refuses such requests.
    if (fieldValue(h, NAME.CONTENT_LENGTH) !== undefined)
      throw new HeadError(502, "both Content-Length and Transfer-Encoding");
    if (h.minor === 0) throw new HeadError(502, "Transfer-Encoding in an HTTP/1.0 response");
    // Transfer-Encoding is hop-by-hop: a coding besides chunked, which we cannot undo, would
    // reach the client as if it were the content.
    if (trimOws(te).toLowerCase() !== "chunked") throw new HeadError(502, "unsupported transfer coding");
    return new ChunkedBody(502);
  }
  const length = contentLength(h, 502);
  if (length === undefined) return new CloseBody();
  return length === 0 ? NO_BODY : new LengthBody(length);
}
