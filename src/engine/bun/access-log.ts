// The request log and metrics of http/request-log.ts (one line format: writeAccessLine), for pass-through requests the front end
// relays to the homeserver itself (they never reach node:http, where requestLog wraps the app).
// Intercepted requests are logged by the app, so each request is logged exactly once.
import { randomUUID } from "node:crypto";
import type { Logger } from "../../observe/log.ts";
import { clientAddressOf } from "../../http/forwarded.ts";
import { CLIENT_CLOSED, levelFor, requestIdFor, type RouteClass, writeAccessLine } from "../../http/request-log.ts";

/** The two metrics the access log moves (prom-client's, or a front-end thread's relay of them). */
export interface AccessMetrics {
  requests: { labels(l: { route: string; status: string }): { inc(): void } };
  upstreamLatency: { labels(l: { route: string }): { observe(v: number): void } };
}

export interface AccessLogOptions {
  log: Logger;
  metrics?: AccessMetrics;
  trusted: (ip: string) => boolean;
  newId?: () => string;
}

export interface Finished {
  id: string;
  route: RouteClass;
  method: string;
  target: string;
  peer: string;
  /** The request's X-Forwarded-For (read when the peer is a trusted proxy). */
  forwardedFor: string | undefined;
  started: number;
  /** The status sent to the client; undefined when no response head was sent. */
  status: number | undefined;
  /** The response did not reach its end (the client or the homeserver went away). */
  aborted: boolean;
}

export interface AccessLog {
  /** An inbound X-Request-Id is kept only from a trusted peer, as http/request-log.ts does. */
  requestId(inbound: string | undefined, peer: string): string;
  upstreamLatency(route: RouteClass, seconds: number): void;
  finished(f: Finished): void;
}

export function createAccessLog(o: AccessLogOptions): AccessLog {
  const newId = o.newId ?? randomUUID;
  // Label sets resolved once: prom-client hashes a label object on every inc() and observe(),
  // a visible share of a small request's cost here. Both label sets are small and bounded.
  // By route, then by status: a key string per request cost more than the count.
  const counted = new Map<RouteClass, { inc(): void }[]>();
  const timed = new Map<RouteClass, { observe(v: number): void }>();
  return {
    requestId: (inbound, peer) => requestIdFor(inbound, peer, o.trusted, newId),
    upstreamLatency(r, seconds) {
      const m = o.metrics;
      if (!m) return;
      let child = timed.get(r);
      if (!child) timed.set(r, (child = m.upstreamLatency.labels({ route: r })));
      child.observe(seconds);
    },
    finished(f) {
      const r = f.route;
      const status = f.status ?? CLIENT_CLOSED;
      const m = o.metrics;
      if (m) {
        let byStatus = counted.get(r);
        if (!byStatus) counted.set(r, (byStatus = []));
        let child = byStatus[status];
        if (!child) byStatus[status] = child = m.requests.labels({ route: r, status: String(status) });
        child.inc();
      }
      // Most requests are not logged at the default level: build no record for them (one
      // object per request was a visible share of the front end's cost, docs/performance.md).
      if (o.log.writes?.(levelFor(r, f.aborted ? CLIENT_CLOSED : status)) === false) return;
      writeAccessLine(o.log, {
        id: f.id,
        method: f.method,
        route: r,
        status,
        durationMs: performance.now() - f.started,
        target: f.target,
        aborted: f.aborted,
        client: () => clientAddressOf(f.peer, (n) => (n === "x-forwarded-for" ? f.forwardedFor : undefined), o.trusted),
      });
    },
  };
}
