// Heads the front end writes: the request for the next hop and the response for the client.
// Field lines are copied as received, less hop-by-hop ones (RFC 9110 §7.6.1; which ones is
// stripHopByHop's decision, see names.ts) and those the Connection field names.
import { unwrapTarget, upstreamTarget } from "../../delivery/tokens.ts";
import { corsHeaders } from "../../http/cors.ts";
import {
  CONN_NAMES,
  CONN_UNSURE,
  connectionOptions,
  F_ID,
  F_LINE,
  F_LINE_END,
  F_NAME_END,
  F_STRIDE,
  fieldValue,
  type Head,
  type RequestHead,
  type ResponseHead,
} from "./head.ts";
import { HOP_BY_HOP, mask, NAME, nameIs } from "./names.ts";

/** Names a Connection field lists besides close/keep-alive: hop-by-hop for this message too. */
function connectionNamed(h: Head): string[] | undefined {
  // Most heads name nothing (no Connection field, or close / keep-alive): no strings for them.
  if ((connectionOptions(h) & (CONN_NAMES | CONN_UNSURE)) === 0) return undefined;
  const v = fieldValue(h, NAME.CONNECTION);
  if (v === undefined) return undefined;
  // Content-Length frames the body we relay verbatim: it goes with that body whatever
  // Connection names, or the next hop would read the body as messages of its own.
  const names = v
    .split(",")
    .map((n) => n.trim().toLowerCase())
    .filter((n) => n !== "" && n !== "close" && n !== "keep-alive" && n !== "content-length");
  return names.length > 0 ? names : undefined;
}

/** Offsets (into h.fields) of the fields to forward: not hop-by-hop, not in the `drop` mask. */
function forwarded(h: Head, drop: number): number[] {
  const f = h.fields;
  const named = connectionNamed(h);
  const out: number[] = [];
  for (let k = 0; k < f.length; k += F_STRIDE) {
    const id = f[k + F_ID]!;
    if (HOP_BY_HOP[id] || (drop & (1 << id)) !== 0) continue;
    if (named !== undefined && isNamed(h, k, named)) continue;
    out.push(k);
  }
  return out;
}

function isNamed(h: Head, k: number, named: string[]): boolean {
  for (const n of named) if (nameIs(h.buf, h.fields[k + F_LINE]!, h.fields[k + F_NAME_END]!, n)) return true;
  return false;
}

/** Is a field with name id `id` among the forwarded ones? */
function forwards(h: Head, ks: number[], id: number): boolean {
  for (const k of ks) if (h.fields[k + F_ID] === id) return true;
  return false;
}

const LENGTH = mask(NAME.CONTENT_LENGTH);
const CR = 13,
  LF = 10;
const ID_NAME = Buffer.from("x-request-id: ", "latin1");
const CHUNKED_LINE = Buffer.from("transfer-encoding: chunked\r\n", "latin1");
const CLOSE_LINE = Buffer.from("connection: close\r\n", "latin1");
const KEEP_ALIVE_LINE = Buffer.from("connection: keep-alive\r\n", "latin1");
const HTTP11_LINE_END = Buffer.from(" HTTP/1.1\r\n", "latin1");
const HTTP11 = Buffer.from("HTTP/1.1 ", "latin1");

function linesSize(h: Head, ks: number[]): number {
  let n = 0;
  for (const k of ks) n += h.fields[k + F_LINE_END]! - h.fields[k + F_LINE]! + 2;
  return n;
}

// Lines that follow one another in the received head go out in one copy: a copy is a call
// into the runtime, and most heads forward every line.
function copyLines(h: Head, ks: number[], out: Buffer, p: number): number {
  const f = h.fields;
  let from = -1,
    to = -1;
  for (const k of ks) {
    const start = f[k + F_LINE]!,
      end = f[k + F_LINE_END]! + 2;
    if (start === to) {
      to = end;
      continue;
    }
    if (from !== -1) p += h.buf.copy(out, p, from, to);
    from = start;
    to = end;
  }
  if (from !== -1) p += h.buf.copy(out, p, from, to);
  return p;
}

export interface NextHopRequest {
  /** Path prefix of --upstream (no trailing slash): the raw target is appended as is. */
  prefix: string;
  /** Host to send when the client sent none (an HTTP/1.0 client), as node's client would. */
  defaultHost: string;
  /** Name ids (a names.ts mask) replaced by `add`: never forwarded from the client. */
  replace: number;
  /** Field lines of ours, each ending in CRLF. */
  add: string;
  /** The body is chunked: Transfer-Encoding (hop-by-hop) is restated for this hop. */
  chunked: boolean;
  /** A target to send instead of the client's (only ever a changed `timeout` parameter, and our suffix off positions). */
  target?: string;
  /** The next hop is the homeserver: our suffix comes off any sync position (tokens.ts). */
  unwrap?: boolean;
}

/**
 * The request line and fields for the next hop. A proxy sends its own HTTP version (RFC 9110
 * §6.2), and keeps the connection open: HTTP/1.1's default, so no Connection field is needed.
 */
export function nextHopRequestHead(h: RequestHead, o: NextHopRequest): Buffer {
  const ks = forwarded(h, o.replace);
  let tail = forwards(h, ks, NAME.HOST) ? o.add : `host: ${o.defaultHost}\r\n${o.add}`;
  if (o.chunked) tail += "transfer-encoding: chunked\r\n";
  // The spec lets a client reuse a /sync next_batch as `from`/`to` elsewhere (GET /keys/changes,
  // /rooms/{roomId}/messages): every request, intercepted or not, loses our suffix here.
  const target = o.unwrap ? (o.target === undefined ? unwrapTarget(h.target) : upstreamTarget(o.target)) : o.target;
  const targetSize = target === undefined ? h.targetEnd - h.targetStart : Buffer.byteLength(target, "latin1");
  const out = Buffer.allocUnsafe(
    h.targetStart - h.start + o.prefix.length + targetSize + 11 + linesSize(h, ks) + tail.length + 2,
  );
  let p = h.buf.copy(out, 0, h.start, h.targetStart); // "METHOD "
  if (o.prefix.length > 0) p += out.write(o.prefix, p, "latin1");
  p += target === undefined ? h.buf.copy(out, p, h.targetStart, h.targetEnd) : out.write(target, p, "latin1");
  p += HTTP11_LINE_END.copy(out, p);
  p = copyLines(h, ks, out, p);
  p += out.write(tail, p, "latin1");
  out[p] = CR;
  out[p + 1] = LF;
  return out;
}

export interface ClientResponse {
  chunked: boolean;
  /** "close" ends the connection after this response; "keep-alive" is said to HTTP/1.0 clients. */
  connection?: "close" | "keep-alive";
  requestId: string;
  /** The body is rewritten on the way: the next hop's Content-Length does not hold for it. */
  reframed?: boolean;
}

/**
 * The response head for the client: the next hop's status and fields, our framing; then
 * body[bodyStart, bodyEnd) when given, so head and first bytes leave in one write.
 */
export function clientResponseHead(
  h: ResponseHead,
  o: ClientResponse,
  body?: Buffer,
  bodyStart = 0,
  bodyEnd = 0,
): Buffer {
  const ks = forwarded(h, o.reframed ? LENGTH : 0);
  // The homeserver's own id wins, as on the node:http path (its fields override ours there).
  const id = forwards(h, ks, NAME.X_REQUEST_ID) ? undefined : o.requestId;
  // Our lines are constants but for the id: copied as bytes, no string is built per response.
  const framing = o.chunked ? CHUNKED_LINE : undefined;
  const conn = o.connection === undefined ? undefined : o.connection === "close" ? CLOSE_LINE : KEEP_ALIVE_LINE;
  const tailSize =
    (id === undefined ? 0 : ID_NAME.length + id.length + 2) + (framing?.length ?? 0) + (conn?.length ?? 0) + 2;
  const bodySize = body ? bodyEnd - bodyStart : 0;
  const out = Buffer.allocUnsafe(9 + h.lineEnd - h.statusStart + 2 + linesSize(h, ks) + tailSize + bodySize);
  let p = HTTP11.copy(out, 0);
  p += h.buf.copy(out, p, h.statusStart, h.lineEnd + 2);
  p = copyLines(h, ks, out, p);
  if (id !== undefined) {
    p += ID_NAME.copy(out, p);
    p += out.write(id, p, "latin1");
    out[p++] = CR;
    out[p++] = LF;
  }
  if (framing) p += framing.copy(out, p);
  if (conn) p += conn.copy(out, p);
  out[p++] = CR;
  out[p++] = LF;
  if (body) body.copy(out, p, bodyStart, bodyEnd);
  return out;
}

/** An interim (1xx) response relayed to an HTTP/1.1 client: 100 Continue, 103 Early Hints. */
export function interimHead(h: ResponseHead): Buffer {
  const ks = forwarded(h, 0);
  const out = Buffer.allocUnsafe(9 + h.lineEnd - h.statusStart + 2 + linesSize(h, ks) + 2);
  let p = HTTP11.copy(out, 0);
  p += h.buf.copy(out, p, h.statusStart, h.lineEnd + 2);
  p = copyLines(h, ks, out, p);
  out.write("\r\n", p, "latin1");
  return out;
}

const REASONS: Record<number, string> = {
  400: "Bad Request",
  431: "Request Header Fields Too Large",
  501: "Not Implemented",
  502: "Bad Gateway",
  504: "Gateway Timeout",
};

/**
 * What an answer of our own says of the connection: "close", or "keep-alive" to an HTTP/1.0
 * client that asked for it (RFC 9112 §9.3: without it that client expects a close), or nothing:
 * HTTP/1.1 keeps it by default.
 */
export type Persistence = "close" | "keep-alive" | undefined;

/**
 * An error the front end answers itself: Matrix-shaped JSON with CORS headers, like sendJson
 * (http/reply.ts). The connection closes after it whenever the request's framing is in doubt.
 * `toHead`: the request was a HEAD, whose answer has no body (RFC 9110 §9.3.2); a client would
 * read one as the start of the next response.
 */
export function errorResponse(
  status: number,
  error: string,
  requestId: string | undefined,
  connection: Persistence,
  toHead = false,
): Buffer {
  return jsonResponse(status, JSON.stringify({ errcode: "M_UNKNOWN", error }), requestId, connection, toHead);
}

/** A JSON response of our own, with the headers sendJson (http/reply.ts) gives one. */
export function jsonResponse(
  status: number,
  body: string,
  requestId: string | undefined,
  connection: Persistence,
  toHead = false,
): Buffer {
  let s = `HTTP/1.1 ${status} ${REASONS[status] ?? (status === 200 ? "OK" : "Error")}\r\n`;
  for (const k in corsHeaders) s += `${k}: ${corsHeaders[k]}\r\n`;
  s += `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\n`;
  if (requestId !== undefined) s += `x-request-id: ${requestId}\r\n`;
  if (connection) s += `connection: ${connection}\r\n`;
  return Buffer.from(toHead ? `${s}\r\n` : `${s}\r\n${body}`, "utf8");
}
