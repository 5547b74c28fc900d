// One HTTPS request to one resolved address. node:https is used rather than fetch because
// federation needs things fetch cannot express: connect to an IP while naming another host
// in SNI and in the certificate check, send no SNI at all for IP literals, and a raw request
// target. Bun's `undici` Agent is a stub, but its node:https honours servername, ca and
// keep-alive Agents; so does Deno's (test/integration/transport.test.ts and discovery.test.ts).
import https from "node:https";
import tls from "node:tls";
import type { IncomingHttpHeaders } from "node:http";
import { asTransportError, FederationError } from "./errors.ts";

export interface HttpsRequestOptions {
  address: string;
  port: number;
  /** SNI and certificate name; null for IP-literal server names (no SNI, cert checked against the IP). */
  tlsServerName: string | null;
  hostHeader: string;
  method: string;
  /** Raw request target, sent as-is: it is what X-Matrix signed (server-server-api §Request Authentication). */
  path: string;
  headers?: Record<string, string>;
  body?: Uint8Array;
  /** Extra trusted CA PEMs, added to the system roots. */
  ca?: string[];
  timeoutMs: number;
  maxBytes: number;
  signal?: AbortSignal;
  /** An https.Agent for keep-alive reuse; without one each request gets its own connection. */
  agent?: unknown;
}

export interface HttpsResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Uint8Array;
}

// `ca` replaces the default roots in node:tls, so the system roots are added explicitly
// ("system CAs PLUS --federation-ca"). The trust store is built once per list of extra CAs
// (the configuration's array): given as `ca`, node:https under Bun parsed the ~140 roots again
// on every request, 0.3 ms of CPU and a few hundred KB of garbage each (docs/performance.md,
// "Tenth session").
const contexts = new WeakMap<readonly string[], tls.SecureContext>();
function trustedContext(extra: readonly string[]): tls.SecureContext {
  let c = contexts.get(extra);
  if (!c) contexts.set(extra, (c = tls.createSecureContext({ ca: [...tls.rootCertificates, ...extra] })));
  return c;
}

export function httpsRequest(opts: HttpsRequestOptions): Promise<HttpsResponse> {
  const where = `${opts.address}:${opts.port}`;
  return new Promise<HttpsResponse>((resolve, reject) => {
    let settled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finish = (err: FederationError | null, res?: HttpsResponse): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      if (err) {
        req.destroy(err);
        reject(err);
      } else resolve(res!);
    };
    const onAbort = (): void => {
      const reason: unknown = opts.signal?.reason;
      finish(
        reason instanceof FederationError ? reason : new FederationError("transport", `request to ${where} aborted`),
      );
    };

    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(opts.headers ?? {})) if (k.toLowerCase() !== "host") headers[k] = v;
    headers.host = opts.hostHeader;
    if (opts.body) headers["content-length"] = String(opts.body.byteLength);
    const req = https.request({
      host: opts.address,
      port: opts.port,
      method: opts.method,
      path: opts.path,
      headers,
      // "" (not undefined): node:https would otherwise derive SNI from the Host header.
      // RFC 6066 §3 forbids IP literals in SNI, so IP-literal server names send none.
      // The default identity check then uses the servername, or the address when there is
      // none: so the certificate must match the server name (or delegated name), never the
      // SRV target (server-server-api §Resolving server names, step 4). A custom
      // checkServerIdentity would say the same, but on Bun it stops keep-alive reuse.
      servername: opts.tlsServerName ?? "",
      ...(opts.ca && opts.ca.length > 0 ? { secureContext: trustedContext(opts.ca) } : {}),
      agent: (opts.agent as https.Agent | undefined) ?? false,
    });

    timer = setTimeout(() => {
      finish(new FederationError("timeout", `no complete response from ${where} within ${opts.timeoutMs} ms`));
    }, opts.timeoutMs);
    if (opts.signal?.aborted) return onAbort();
    opts.signal?.addEventListener("abort", onAbort);

    req.on("error", (e) => finish(asTransportError(e, `request to ${where} failed`)));
    req.on("response", (res) => {
      const status = res.statusCode ?? 0;
      const declared = Number(res.headers["content-length"]);
      if (Number.isFinite(declared) && declared > opts.maxBytes) {
        finish(
          new FederationError(
            "too_large",
            `response from ${where} declares ${declared} bytes, cap is ${opts.maxBytes}`,
            status,
          ),
        );
        res.destroy();
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (chunk: Buffer) => {
        size += chunk.byteLength;
        if (size > opts.maxBytes) {
          // Settle first: destroying emits "aborted"/"end", which must not win.
          finish(new FederationError("too_large", `response from ${where} exceeds ${opts.maxBytes} bytes`, status));
          res.destroy();
          return;
        }
        chunks.push(chunk);
      });
      res.on("error", (e) => finish(asTransportError(e, `reading response from ${where} failed`)));
      res.on("aborted", () => finish(new FederationError("transport", `response from ${where} was cut off`, status)));
      res.on("end", () => {
        if (!res.complete)
          return finish(new FederationError("transport", `response from ${where} was cut off`, status));
        const body = Buffer.concat(chunks);
        finish(null, {
          status,
          headers: copyHeaders(res.headers),
          body: new Uint8Array(body.buffer, body.byteOffset, body.byteLength),
        });
      });
    });
    req.end(opts.body ? Buffer.from(opts.body.buffer, opts.body.byteOffset, opts.body.byteLength) : undefined);
  });
}

function copyHeaders(h: IncomingHttpHeaders): Record<string, string | string[] | undefined> {
  return { ...h };
}
