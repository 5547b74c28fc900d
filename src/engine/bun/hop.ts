// The two next hops of the front end: the homeserver (pass-through) and the proxy's own app
// (intercepted routes, served by node:http on an internal socket).
import { isIP } from "node:net";
import { FRONT_PEER_HEADER, FRONT_SECRET_HEADER } from "../../http/forwarded.ts";
import { forwardedFor } from "../../http/forwarded.ts";
import { headerTimeoutFor } from "../../http/passthrough.ts";
import { fieldNamed, fieldValue, type RequestHead } from "./head.ts";
import { mask, NAME } from "./names.ts";
import { type Destination, Pool } from "./pool.ts";
import { errorResponse, nextHopRequestHead, type Persistence } from "./rewrite-head.ts";

/** The client connection as an exchange sees it. */
export interface ClientSide {
  /** Write (or queue) bytes for the client; false while anything waits for `drain`. */
  send(buf: Buffer): boolean;
  pauseReading(): void;
  resumeReading(): void;
  /** The exchange is over; `keep`: the connection may carry the next request. */
  done(keep: boolean): void;
  /** End the connection now: a response that cannot be completed. */
  cut(): void;
  readonly draining: boolean;
}

export interface HeadContext {
  peer: string;
  requestId: string;
  chunked: boolean;
  /** Ask for an uncompressed response: we read its body (homeserver hop only). */
  identity?: boolean;
  /** Send this target instead of the client's (homeserver hop only). */
  target?: string;
}

export interface Hop {
  /** Says who failed, in the 502/504 error text. */
  readonly name: string;
  readonly pool: Pool;
  headerTimeoutMs(target: string): number | undefined;
  requestHead(h: RequestHead, c: HeadContext): Buffer;
  errorResponse(status: number, message: string, requestId: string, connection: Persistence, toHead?: boolean): Buffer;
}

// Keep-alive connections idle longer than this are closed by us, before typical server idle
// timeouts (nginx 75 s, our own app 75 s) would close them under a request.
const POOL = { idleSeconds: 30, maxIdle: 256 };

// The client's own values of these never reach the homeserver: we state them (X-Forwarded-*
// by the trust rules of http/forwarded.ts, X-Request-Id as http/request-log.ts chose it), and the front's
// peer and secret headers are only ever ours.
const REPLACED_UPSTREAM = mask(
  NAME.X_FORWARDED_FOR,
  NAME.X_FORWARDED_PROTO,
  NAME.X_FORWARDED_HOST,
  NAME.X_REQUEST_ID,
  NAME.X_RESYNC_PEER,
  NAME.X_RESYNC_FRONT,
);
const REPLACED_APP = mask(NAME.X_RESYNC_PEER, NAME.X_RESYNC_FRONT);
const REPLACED_IDENTITY = REPLACED_UPSTREAM | mask(NAME.ACCEPT_ENCODING);

export interface HomeserverHopOptions {
  upstream: URL;
  headerTimeoutMs: number;
  trusted: (ip: string) => boolean;
  /** Extra PEM CA for an https homeserver (tests); the system's CAs are always trusted. */
  ca?: string;
}

export function homeserverHop(o: HomeserverHopOptions): Hop {
  const u = o.upstream;
  const hostname = u.hostname.replace(/^\[|\]$/g, "");
  const https = u.protocol === "https:";
  const destination: Destination = {
    hostname,
    port: Number(u.port || (https ? 443 : 80)),
    // SNI carries names only (RFC 6066 §3); the certificate is checked against the hostname.
    ...(https ? { tls: { ...(isIP(hostname) ? {} : { serverName: hostname }), ...(o.ca ? { ca: o.ca } : {}) } } : {}),
  };
  const prefix = u.pathname.replace(/\/+$/, "");
  // Read once: a URL getter builds a new string on every call, 0.3 µs here, per request.
  const defaultHost = u.host;
  return {
    name: "homeserver",
    pool: new Pool(destination, POOL),
    // Only a target with a timeout parameter can change it: no pattern match for the others.
    headerTimeoutMs: (target) =>
      target.includes("timeout=") ? headerTimeoutFor(target, o.headerTimeoutMs) : o.headerTimeoutMs,
    requestHead(h, c) {
      let add: string;
      if (o.trusted(c.peer)) {
        const f = forwardedFor(c.peer, (n) => fieldNamed(h, n), o.trusted);
        add = `x-forwarded-for: ${f["x-forwarded-for"]}\r\nx-forwarded-proto: ${f["x-forwarded-proto"]}\r\nx-forwarded-host: ${f["x-forwarded-host"]}\r\n`;
      } else {
        // What forwardedFor answers for a peer we do not trust (the usual case), without its
        // object and reader: the peer alone, plain http, and the Host as the client sent it.
        add = `x-forwarded-for: ${c.peer}\r\nx-forwarded-proto: http\r\nx-forwarded-host: ${fieldValue(h, NAME.HOST) ?? ""}\r\n`;
      }
      add += `x-request-id: ${c.requestId}\r\n`;
      if (c.identity) add += "accept-encoding: identity\r\n";
      return nextHopRequestHead(h, {
        prefix,
        defaultHost,
        replace: c.identity ? REPLACED_IDENTITY : REPLACED_UPSTREAM,
        add,
        chunked: c.chunked,
        target: c.target,
        unwrap: true,
      });
    },
    errorResponse,
  };
}

export interface AppHopOptions {
  destination: Destination;
  secret: string;
  /** Host to state for a client that sent none, as the homeserver hop does. */
  defaultHost: string;
}

/**
 * The app gets the client's headers as sent (it applies the X-Forwarded-* and X-Request-Id
 * rules itself), plus the real peer, vouched for by the per-process secret (engine/node/app.ts admitFront).
 * No header timeout: the app times its own homeserver calls and answers 504 itself.
 */
export function appHop(o: AppHopOptions): Hop {
  return {
    name: "proxy's internal listener",
    pool: new Pool(o.destination, POOL),
    headerTimeoutMs: () => undefined,
    requestHead(h, c) {
      return nextHopRequestHead(h, {
        prefix: "",
        defaultHost: o.defaultHost,
        replace: REPLACED_APP,
        add: `${FRONT_PEER_HEADER}: ${c.peer}\r\n${FRONT_SECRET_HEADER}: ${o.secret}\r\n`,
        chunked: c.chunked,
      });
    },
    errorResponse,
  };
}
