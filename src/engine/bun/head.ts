// HTTP/1.1 message heads (RFC 9112 §2–§5), parsed in place: fields are offsets into the
// received bytes, so a field or target we forward is copied byte for byte: nothing is decoded,
// normalised or re-encoded (docs/architecture.md "The request target"; the matrix-corporal bypass came from a proxy that
// normalised the path it matched). Strings are made only of what we read: method, target and
// a few field values.
import { NAME, NAMES, nameId, nameIs } from "./names.ts";

/** A request head beyond this is refused with 431 (RFC 6585 §5). */
export const MAX_HEAD_BYTES = 64 * 1024;

// Per field, F_STRIDE numbers in Head.fields: line start, name end (the colon), value start and
// end (without OWS), line end (before CRLF), name id (names.ts).
export const F_LINE = 0,
  F_NAME_END = 1,
  F_VALUE = 2,
  F_VALUE_END = 3,
  F_LINE_END = 4,
  F_ID = 5,
  F_STRIDE = 6;

export interface Head {
  readonly buf: Buffer;
  readonly fields: number[];
  /** The Connection options it lists (connectionOptions), read once when parsed. */
  readonly conn: number;
}

export interface RequestHead extends Head {
  /** Where the request line starts in buf. */
  start: number;
  method: string;
  /** The request target exactly as sent: never decoded or normalised. */
  target: string;
  targetStart: number;
  targetEnd: number;
  /** Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: number;
}

export interface ResponseHead extends Head {
  status: number;
  minor: number;
  /** buf[statusStart, lineEnd): "200 OK", the status line after the version. */
  statusStart: number;
  lineEnd: number;
}

/** A message we refuse: the status says why (400, 431, 501 for requests; 502 for responses). */
export class HeadError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

const CR = 13,
  LF = 10,
  SP = 32,
  HTAB = 9,
  COLON = 58;
// RFC 9110 §5.6.2 tchar.
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
  TCHAR[c.charCodeAt(0)] = 1;
const CRLF_CRLF = Buffer.from("\r\n\r\n");
// Common methods are returned as constants: no string is built for them per request.
const METHODS = ["GET", "PUT", "POST", "HEAD", "DELETE", "OPTIONS"].map((m) => [m, Buffer.from(m)] as const);

// Bun's Buffer has node's latin1Slice: the same string as toString("latin1", …) without its
// encoding dispatch, which cost twice the copy for the short values read per request.
const latin1 = (buf: Buffer, start: number, end: number): string =>
  (buf as Buffer & { latin1Slice(start: number, end: number): string }).latin1Slice(start, end);

function methodAt(buf: Buffer, start: number, end: number): string {
  next: for (const [name, bytes] of METHODS) {
    if (bytes.length !== end - start) continue;
    for (let i = 0; i < bytes.length; i++) if (buf[start + i] !== bytes[i]) continue next;
    return name;
  }
  return latin1(buf, start, end);
}
const HTTP1 = Buffer.from("HTTP/1.");
const ID_OF = new Map(NAMES.map((n, id) => [n, id] as const).filter(([n]) => n !== ""));

/** Index just past the blank line that ends a head starting at `from`, or -1 if not yet received. */
export function headEnd(buf: Buffer, from: number, searchFrom = from): number {
  const i = buf.indexOf(CRLF_CRLF, Math.max(from, searchFrom));
  return i === -1 ? -1 : i + 4;
}

function versionAt(buf: Buffer, i: number): number {
  for (let k = 0; k < HTTP1.length; k++) if (buf[i + k] !== HTTP1[k]) return -1;
  const d = buf[i + HTTP1.length]!;
  return d === 48 ? 0 : d === 49 ? 1 : -1;
}

/**
 * Field lines from `i` to the blank line at end-2. RFC 9112 §5.1: no whitespace between name
 * and colon; §5.2: obs-fold refused; RFC 9110 §5.5: no CR, LF, NUL (nor other controls but
 * HTAB, as node refuses) in values, so no field can smuggle a line break to the next hop.
 */
function parseFields(buf: Buffer, i: number, end: number, status: number): number[] {
  const fields: number[] = [];
  while (i < end - 2) {
    const line = i;
    while (TCHAR[buf[i]!] === 1) i++;
    if (i === line || buf[i] !== COLON) throw new HeadError(status, "malformed header line");
    const nameEnd = i++;
    while (buf[i] === SP || buf[i] === HTAB) i++;
    const value = i;
    for (let c = buf[i]!; c !== CR; c = buf[++i]!)
      if ((c < 32 && c !== HTAB) || c === 127) throw new HeadError(status, "control character in a header value");
    if (buf[i + 1] !== LF) throw new HeadError(status, "bare CR in a header line");
    let valueEnd = i;
    while (valueEnd > value && (buf[valueEnd - 1] === SP || buf[valueEnd - 1] === HTAB)) valueEnd--;
    fields.push(line, nameEnd, value, valueEnd, i, nameId(buf, line, nameEnd));
    i += 2;
  }
  return fields;
}

/** Parse the request head buf[start, end) (`end` just past its blank line). */
export function parseRequestHead(buf: Buffer, start: number, end: number): RequestHead {
  let i = start;
  while (TCHAR[buf[i]!] === 1) i++;
  if (i === start || buf[i] !== SP) throw new HeadError(400, "malformed request line");
  const method = methodAt(buf, start, i);
  const targetStart = ++i;
  // Any visible byte (obs-text included, as node's parser allows); never a space or control.
  for (let c = buf[i]!; c > SP && c !== 127; c = buf[++i]!);
  const targetEnd = i;
  if (targetEnd === targetStart || buf[i] !== SP) throw new HeadError(400, "malformed request line");
  const minor = versionAt(buf, i + 1);
  if (minor === -1 || buf[i + 9] !== CR || buf[i + 10] !== LF) throw new HeadError(400, "malformed request line");
  const fields = parseFields(buf, i + 11, end, 400);
  return {
    buf,
    fields,
    conn: readConnection(buf, fields),
    start,
    method,
    target: latin1(buf, targetStart, targetEnd),
    targetStart,
    targetEnd,
    minor,
  };
}

/** Parse a response head from the next hop; anything malformed is a HeadError 502. */
export function parseResponseHead(buf: Buffer, start: number, end: number): ResponseHead {
  const minor = versionAt(buf, start);
  const s = start + 9;
  const d0 = buf[s]! - 48,
    d1 = buf[s + 1]! - 48,
    d2 = buf[s + 2]! - 48;
  if (minor === -1 || buf[start + 8] !== SP || !(d0 >= 1 && d0 <= 9 && d1 >= 0 && d1 <= 9 && d2 >= 0 && d2 <= 9))
    throw new HeadError(502, "malformed status line from upstream");
  let i = s + 3;
  if (buf[i] !== CR && buf[i] !== SP) throw new HeadError(502, "malformed status line from upstream");
  for (let c = buf[i]!; c !== CR; c = buf[++i]!)
    if ((c < 32 && c !== HTAB) || c === 127) throw new HeadError(502, "malformed status line from upstream");
  if (buf[i + 1] !== LF) throw new HeadError(502, "malformed status line from upstream");
  const fields = parseFields(buf, i + 2, end, 502);
  return {
    buf,
    fields,
    conn: readConnection(buf, fields),
    status: d0 * 100 + d1 * 10 + d2,
    minor,
    statusStart: s,
    lineEnd: i,
  };
}

/** All values of the field with name id `id`, comma-joined (RFC 9110 §5.3); undefined if absent. */
export function fieldValue(h: Head, id: number): string | undefined {
  const f = h.fields;
  let out: string | undefined;
  for (let k = 0; k < f.length; k += F_STRIDE) {
    if (f[k + F_ID] !== id) continue;
    const v = latin1(h.buf, f[k + F_VALUE]!, f[k + F_VALUE_END]!);
    out = out === undefined ? v : `${out}, ${v}`;
  }
  return out;
}

/**
 * The value of the one field with name id `id` when it is 1 to 15 digits, as a number; -1 when
 * the field is absent, -2 otherwise (repeated, or not plain digits: the caller looks closer).
 */
export function digitsField(h: Head, id: number): number {
  const f = h.fields;
  let at = -1;
  for (let k = 0; k < f.length; k += F_STRIDE) {
    if (f[k + F_ID] !== id) continue;
    if (at !== -1) return -2;
    at = k;
  }
  if (at === -1) return -1;
  const s = f[at + F_VALUE]!,
    e = f[at + F_VALUE_END]!;
  if (e === s || e - s > 15) return -2;
  let n = 0;
  for (let i = s; i < e; i++) {
    const d = h.buf[i]! - 48;
    if (d < 0 || d > 9) return -2;
    n = n * 10 + d;
  }
  return n;
}

/** fieldValue by lower-case name, for any field (a HeaderReader). */
export function fieldNamed(h: Head, name: string): string | undefined {
  // A name we know has an id: compare numbers rather than bytes.
  const id = ID_OF.get(name);
  if (id !== undefined) return fieldValue(h, id);
  const f = h.fields;
  let out: string | undefined;
  for (let k = 0; k < f.length; k += F_STRIDE) {
    if (!nameIs(h.buf, f[k + F_LINE]!, f[k + F_NAME_END]!, name)) continue;
    const v = latin1(h.buf, f[k + F_VALUE]!, f[k + F_VALUE_END]!);
    out = out === undefined ? v : `${out}, ${v}`;
  }
  return out;
}

/** How many fields have name id `id`. */
export function fieldCount(h: Head, id: number): number {
  let n = 0;
  for (let k = F_ID; k < h.fields.length; k += F_STRIDE) if (h.fields[k] === id) n++;
  return n;
}

/** connectionOptions bits: which Connection options (RFC 9110 §7.6.1) a head lists. */
export const CONN_CLOSE = 1,
  CONN_KEEP_ALIVE = 2,
  /** A name besides close, keep-alive and content-length: a field to strip (rewrite-head.ts). */
  CONN_NAMES = 4,
  /** A byte beyond ASCII: the caller reads the value as a string (hasToken) instead. */
  CONN_UNSURE = 8;

const CLOSE = Buffer.from("close"),
  KEEP_ALIVE = Buffer.from("keep-alive"),
  CONTENT_LENGTH = Buffer.from("content-length");

function tokenIs(buf: Buffer, s: number, e: number, lower: Buffer): boolean {
  if (e - s !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) {
    const c = buf[s + i]!;
    if ((c >= 65 && c <= 90 ? c + 32 : c) !== lower[i]) return false;
  }
  return true;
}

/**
 * The options the Connection fields list (CONN_* bits), read from their bytes when the head is
 * parsed: every head we relay is asked up to twice, and the string path (fieldValue, split,
 * trim, lower-case) cost more than the rest of the head. Elements are split on commas and
 * trimmed of SP and HTAB, the only whitespace parseFields lets into a value; any byte beyond
 * ASCII answers CONN_UNSURE, since String trim() and toLowerCase() treat some of those as
 * space or letters, and the string path decides.
 */
export function connectionOptions(h: Head): number {
  return h.conn;
}

function readConnection(buf: Buffer, f: number[]): number {
  let out = 0;
  for (let k = 0; k < f.length; k += F_STRIDE) {
    if (f[k + F_ID] !== NAME.CONNECTION) continue;
    const end = f[k + F_VALUE_END]!;
    for (let i = f[k + F_VALUE]!; i <= end; i++) {
      let s = i;
      while (i < end && buf[i] !== 44) if (buf[i++]! >= 128) return CONN_UNSURE;
      let e = i;
      while (s < e && (buf[s] === SP || buf[s] === HTAB)) s++;
      while (e > s && (buf[e - 1] === SP || buf[e - 1] === HTAB)) e--;
      if (s === e) continue;
      if (tokenIs(buf, s, e, CLOSE)) out |= CONN_CLOSE;
      else if (tokenIs(buf, s, e, KEEP_ALIVE)) out |= CONN_KEEP_ALIVE;
      else if (!tokenIs(buf, s, e, CONTENT_LENGTH)) out |= CONN_NAMES;
    }
  }
  return out;
}

/** Does a comma-separated field (Connection, Transfer-Encoding) list `token`? */
export function hasToken(value: string | undefined, token: string): boolean {
  if (value === undefined) return false;
  for (const part of value.split(",")) if (part.trim().toLowerCase() === token) return true;
  return false;
}

/** Does the client want the connection kept after this request? (RFC 9112 §9.3) */
export function clientKeepsAlive(h: RequestHead): boolean {
  const o = connectionOptions(h);
  if ((o & CONN_UNSURE) === 0) {
    if ((o & CONN_CLOSE) !== 0) return false;
    return h.minor === 1 || (o & CONN_KEEP_ALIVE) !== 0;
  }
  const conn = fieldValue(h, NAME.CONNECTION);
  if (conn === undefined) return h.minor === 1;
  if (hasToken(conn, "close")) return false;
  return h.minor === 1 || hasToken(conn, "keep-alive");
}
