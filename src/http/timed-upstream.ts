// Upstream latency: time from opening a homeserver request to its response headers, labelled
// by the client route class it serves. Wrapping the one Upstream every caller shares measures
// pass-through and intercepted routes alike, without touching either.
import { routeClass } from "./request-log.ts";
import type { Upstream } from "./upstream.ts";
import type { Metrics } from "../observe/metrics.ts";

export function timedUpstream(up: Upstream, metrics: Metrics, now: () => number = () => performance.now()): Upstream {
  return {
    base: up.base,
    async open(o) {
      const started = now();
      const res = await up.open(o);
      // Requests with a client response behind them carry a client route; the proxy's own calls
      // (whoami, device lists, readiness) are "internal". A /sync long-poll's wait is included:
      // the route label keeps it apart. Failures have no headers to time; they show as 502/504
      // in resync_http_requests_total.
      const q = o.target.indexOf("?");
      const route = o.clientRes ? routeClass(o.method, q === -1 ? o.target : o.target.slice(0, q)) : "internal";
      metrics.upstreamLatency.observe({ route }, (now() - started) / 1000);
      return res;
    },
  };
}
