// Federation HTTP transport: discovery, then one HTTPS request, tried on each resolved target
// in order until one connects. One keep-alive https.Agent per destination, and at most
// `maxPerDestination` requests in flight per destination (the remote Synapse admits 3
// concurrent requests per origin, rc_federation.concurrent; more would just queue there).
// The caller signs (X-Matrix Authorization header); this layer never touches the path.
import https from "node:https";
import { setInterval } from "node:timers";
import type { ResolvedServer } from "./discovery.ts";
import { asTransportError, FederationError } from "./errors.ts";
import { httpsRequest, type HttpsResponse } from "./https.ts";

export interface FederationRequest {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: Uint8Array;
}

export interface FederationTransport {
  request(serverName: string, req: FederationRequest): Promise<HttpsResponse>;
}

export interface TransportOptions {
  discovery: { resolve(s: string): Promise<ResolvedServer> };
  ca?: string[];
  /** Total budget per request: queueing, discovery and every target tried. */
  timeoutMs?: number;
  maxBytes?: number;
  maxPerDestination?: number;
}

interface Destination {
  agent: https.Agent;
  active: number;
  waiting: (() => void)[];
  idleSince: number;
}

// Synapse keeps idle federation connections for 2 minutes (HTTPConnectionPool.cachedConnectionTimeout).
const IDLE_MS = 2 * 60_000;

export function createTransport(opts: TransportOptions): FederationTransport & { close(): void } {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const maxBytes = opts.maxBytes ?? 8 * 1024 * 1024;
  const limit = Math.max(1, opts.maxPerDestination ?? 3);
  const destinations = new Map<string, Destination>();

  const sweep = setInterval(() => {
    const now = Date.now();
    for (const [name, d] of destinations) {
      if (d.active === 0 && d.waiting.length === 0 && now - d.idleSince > IDLE_MS) {
        d.agent.destroy();
        destinations.delete(name);
      }
    }
  }, IDLE_MS / 2);
  sweep.unref(); // never keeps the process alive on its own

  function destination(name: string): Destination {
    let d = destinations.get(name);
    if (!d) {
      // Pool key inside the Agent is address:port:servername, so all targets share it.
      const agent = new https.Agent({ keepAlive: true, maxSockets: limit, maxFreeSockets: limit });
      d = { agent, active: 0, waiting: [], idleSince: Date.now() };
      destinations.set(name, d);
    }
    return d;
  }

  function acquire(d: Destination, deadline: number, name: string): Promise<void> {
    if (d.active < limit) {
      d.active++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const grant = (): void => {
        clearTimeout(timer);
        d.active++;
        resolve();
      };
      const timer = setTimeout(
        () => {
          d.waiting.splice(d.waiting.indexOf(grant), 1);
          reject(new FederationError("timeout", `gave up waiting for a free slot to ${name} after ${timeoutMs} ms`));
        },
        Math.max(0, deadline - Date.now()),
      );
      d.waiting.push(grant);
    });
  }

  function release(d: Destination): void {
    d.active--;
    const next = d.waiting.shift();
    if (next) next();
    else if (d.active === 0) d.idleSince = Date.now();
  }

  function withDeadline<T>(p: Promise<T>, deadline: number, what: string): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const t = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new FederationError("timeout", `${what} did not finish within ${timeoutMs} ms`)),
        Math.max(0, deadline - Date.now()),
      );
    });
    return Promise.race([p, t]).finally(() => clearTimeout(timer));
  }

  async function request(serverName: string, req: FederationRequest): Promise<HttpsResponse> {
    const deadline = Date.now() + timeoutMs;
    const d = destination(serverName.toLowerCase()); // server names compare case-insensitively
    await acquire(d, deadline, serverName);
    try {
      let resolved: ResolvedServer;
      try {
        resolved = await withDeadline(opts.discovery.resolve(serverName), deadline, `discovery of ${serverName}`);
      } catch (e) {
        throw asTransportError(e, `discovery of ${serverName} failed`);
      }
      const headers = { ...req.headers };
      if (!Object.keys(headers).some((k) => k.toLowerCase() === "user-agent"))
        headers["user-agent"] = "matrix-resync-proxy";
      let first: FederationError | undefined;
      for (const target of resolved.targets) {
        const remaining = deadline - Date.now();
        if (remaining <= 0) break;
        try {
          return await httpsRequest({
            address: target.address,
            port: target.port,
            tlsServerName: resolved.tlsServerName,
            hostHeader: resolved.hostHeader,
            method: req.method,
            path: req.path,
            headers,
            body: req.body,
            ca: opts.ca,
            timeoutMs: remaining,
            maxBytes,
            agent: d.agent,
          });
        } catch (e) {
          const err = asTransportError(e, `request to ${serverName} failed`);
          // Only a failure to reach this target moves on to the next one, as Synapse's
          // MatrixHostnameEndpoint does; timeouts and oversized answers end the request.
          if (err.kind !== "transport") throw err;
          first ??= err;
        }
      }
      throw first ?? new FederationError("timeout", `no response from ${serverName} within ${timeoutMs} ms`);
    } finally {
      release(d);
    }
  }

  return {
    request,
    close(): void {
      clearInterval(sweep);
      for (const d of destinations.values()) d.agent.destroy();
      destinations.clear();
    },
  };
}
