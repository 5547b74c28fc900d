import http, {
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
} from "node:http";
import https from "node:https";
import { MatrixError } from "../matrix/errors.ts";

// RFC 9110 §7.6.1: these describe one connection, not the message, so a proxy must not forward
// them, nor any header the Connection header names. Proxy-Authorization/-Authenticate are
// likewise meant for the next hop only (RFC 9110 §11.7).
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "proxy-authorization",
  "proxy-authenticate",
]);

export function stripHopByHop(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = String(headers.connection ?? "")
    .toLowerCase()
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const out: OutgoingHttpHeaders = {};
  for (const key in headers) {
    if (HOP_BY_HOP.has(key) || named.includes(key)) continue;
    out[key] = headers[key];
  }
  return out;
}

export interface Upstream {
  readonly base: URL;
  /** Open a request to the homeserver; resolves when its response headers arrive. */
  open(opts: UpstreamRequest): Promise<IncomingMessage>;
}

export interface UpstreamRequest {
  method: string;
  target: string; // raw path+query, forwarded byte for byte
  headers: OutgoingHttpHeaders;
  body?: IncomingMessage | Uint8Array; // a stream is piped, never buffered
  headerTimeoutMs: number;
  /** The client's response: when it closes early, the upstream request is aborted. */
  clientRes?: ServerResponse;
  signal?: AbortSignal;
}

export function createUpstream(baseUrl: string): Upstream {
  const base = new URL(baseUrl);
  const lib = base.protocol === "https:" ? https : http;
  // Keep-alive pool: a new TCP (and TLS) handshake per client request would dominate latency.
  // No cap on sockets in use: every /sync long-poll holds one upstream connection for its whole
  // timeout, and a cap would queue every later request, short ones included, behind them.
  const agent = new lib.Agent({ keepAlive: true, keepAliveMsecs: 10_000, maxSockets: Infinity, maxFreeSockets: 256 });
  const prefix = base.pathname.replace(/\/+$/, "");

  function open(o: UpstreamRequest): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = lib.request({
        protocol: base.protocol,
        hostname: base.hostname.replace(/^\[|\]$/g, ""),
        port: base.port || (base.protocol === "https:" ? 443 : 80),
        method: o.method,
        path: prefix + o.target,
        headers: o.headers,
        agent,
      });
      let settled = false;
      const fail = (err: MatrixError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.destroy();
        reject(err);
      };
      // The timeout covers the wait for response headers only: once they arrive, a slow body
      // (a /sync streaming megabytes) is governed by the client, never cut by us.
      const timer = setTimeout(
        () => fail(new MatrixError("M_UNKNOWN", "The homeserver did not answer in time", { status: 504 })),
        o.headerTimeoutMs,
      );
      req.on("response", (res) => {
        if (settled) return res.destroy();
        settled = true;
        clearTimeout(timer);
        resolve(res);
      });
      req.on("error", (e: NodeJS.ErrnoException) =>
        fail(new MatrixError("M_UNKNOWN", `The homeserver is unreachable (${e.code ?? e.message})`, { status: 502 })),
      );
      const abort = () => {
        req.destroy();
        fail(new MatrixError("M_UNKNOWN", "Client went away", { status: 499 }));
      };
      o.clientRes?.once("close", () => {
        if (!o.clientRes!.writableFinished) abort();
      });
      o.signal?.addEventListener("abort", abort, { once: true });
      if (o.body instanceof Uint8Array) req.end(o.body);
      else if (o.body) o.body.pipe(req);
      else req.end();
    });
  }

  return { base, open };
}
