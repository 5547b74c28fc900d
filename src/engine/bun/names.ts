// Field names the front end acts on, recognised from their bytes without building strings (a
// string per field per request was most of the front end's cost). Which of them are hop-by-hop
// comes from the one list in http/upstream.ts, which the node:http path strips too.
import { HOP_BY_HOP as HOP_BY_HOP_NAMES } from "../../http/upstream.ts";

export const NAME = {
  OTHER: 0,
  HOST: 1,
  CONTENT_LENGTH: 2,
  TRANSFER_ENCODING: 3,
  CONNECTION: 4,
  KEEP_ALIVE: 5,
  PROXY_CONNECTION: 6,
  TE: 7,
  TRAILER: 8,
  UPGRADE: 9,
  PROXY_AUTHORIZATION: 10,
  PROXY_AUTHENTICATE: 11,
  X_REQUEST_ID: 12,
  X_FORWARDED_FOR: 13,
  X_FORWARDED_PROTO: 14,
  X_FORWARDED_HOST: 15,
  X_RESYNC_PEER: 16,
  X_RESYNC_FRONT: 17,
  ACCEPT_ENCODING: 18,
  CONTENT_ENCODING: 19,
  AUTHORIZATION: 20,
} as const;

// Index = id. RFC 9110 §7.6.1 lists the connection-specific fields; Proxy-Authorization and
// Proxy-Authenticate (§11.7) are for the next hop only. All of them must be here.
export const NAMES: readonly string[] = [
  "",
  "host",
  "content-length",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "upgrade",
  "proxy-authorization",
  "proxy-authenticate",
  "x-request-id",
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
  "x-resync-peer",
  "x-resync-front",
  "accept-encoding",
  "content-encoding",
  "authorization",
];

/** HOP_BY_HOP[id]: never forwarded (the one list, http/upstream.ts). */
export const HOP_BY_HOP: readonly boolean[] = NAMES.map((n) => HOP_BY_HOP_NAMES.has(n));

/** A set of name ids as a bit mask. */
export function mask(...ids: number[]): number {
  return ids.reduce((m, id) => m | (1 << id), 0);
}

const BY_LENGTH: [Uint8Array, number][][] = [];
NAMES.forEach((n, id) => {
  if (n === "") return;
  (BY_LENGTH[n.length] ??= []).push([Buffer.from(n, "latin1"), id]);
});

const lower = (c: number) => (c >= 65 && c <= 90 ? c + 32 : c);

/** The id of the field name buf[s, e), case-insensitively; NAME.OTHER for any other name. */
export function nameId(buf: Buffer, s: number, e: number): number {
  const candidates = BY_LENGTH[e - s];
  if (candidates === undefined) return 0;
  outer: for (const [bytes, id] of candidates) {
    for (let i = 0; i < bytes.length; i++) if (lower(buf[s + i]!) !== bytes[i]) continue outer;
    return id;
  }
  return 0;
}

/** Does buf[s, e) equal the lower-case `name`, case-insensitively? */
export function nameIs(buf: Buffer, s: number, e: number, name: string): boolean {
  if (e - s !== name.length) return false;
  for (let i = 0; i < name.length; i++) if (lower(buf[s + i]!) !== name.charCodeAt(i)) return false;
  return true;
}
