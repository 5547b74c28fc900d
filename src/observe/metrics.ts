// Every metric in one place, each name prefixed `resync_`. The registry is injectable so each
// test gets its own. prom-client runs unchanged under Bun and Deno.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { FastHistogram, SummedCounter } from "./fast-metrics.ts";

export interface MetricSources {
  // Read from the store: prom-client awaits a collect() that returns a promise.
  retryQueueDepth?: () => Promise<number>;
  destinationsInBackoff?: () => Promise<number>;
  pendingDeliveries?: () => Promise<number>;
  openLongPolls?: () => number;
  auditBehindSeconds?: () => number;
  homeserverViews?: () => number;
}

export function createMetrics(registry: Registry = new Registry(), sources: MetricSources = {}) {
  const registers = [registry];
  const gauge = (name: string, help: string, read?: () => number | Promise<number>) =>
    new Gauge({
      name,
      help,
      registers,
      async collect() {
        if (read) this.set(await read());
      },
    });
  // The event-loop delay monitor samples on a timer: prom-client's default 10 ms woke the idle
  // process 100 times a second, most of its CPU with thousands of long-polls held and nothing
  // else to do (docs/performance.md). Every 100 ms still catches any stall worth a graph.
  collectDefaultMetrics({ register: registry, prefix: "resync_", eventLoopMonitoringPrecision: 100 });
  return {
    registry,
    sources,
    // The two that every relayed request moves, kept cheap per request (fast-metrics.ts).
    requests: new SummedCounter({
      name: "resync_http_requests_total",
      help: "Client requests by route class and status",
      labelNames: ["route", "status"],
      registers,
    }),
    upstreamLatency: new FastHistogram({
      name: "resync_upstream_response_seconds",
      help: "Time to the homeserver's response headers, by route class",
      labelNames: ["route"],
      registers,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    }),
    refreshes: new Counter({
      name: "resync_refreshes_total",
      help: "Refresh requests by outcome",
      labelNames: ["outcome"],
      registers,
    }),
    federationRequests: new Counter({
      name: "resync_federation_requests_total",
      help: "Federation device-list fetches by destination class and outcome",
      labelNames: ["destination_class", "outcome"],
      registers,
    }),
    federationLatency: new Histogram({
      name: "resync_federation_request_seconds",
      help: "Federation device-list fetch latency",
      labelNames: ["outcome"],
      registers,
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    }),
    droppedParts: new Counter({
      name: "resync_federation_dropped_parts_total",
      help: "Invalid devices or keys dropped from remote answers",
      labelNames: ["part"],
      registers,
    }),
    staleAnswers: new Counter({
      name: "resync_federation_stale_answers_total",
      help: "Remote device lists older (lower stream_id) than the stored snapshot, and not stored",
      registers,
    }),
    overlaysServed: new Counter({
      name: "resync_keys_query_overlays_total",
      help: "Users whose /keys/query answer was replaced by a fresh snapshot",
      registers,
    }),
    injections: new Counter({
      name: "resync_device_list_injections_total",
      help: "Users added to device_lists.changed, by endpoint",
      labelNames: ["endpoint"],
      registers,
    }),
    wakes: new Counter({
      name: "resync_long_poll_wakes_total",
      help: "Long-polls answered early because a refresh landed",
      registers,
    }),
    storeErrors: new Counter({
      name: "resync_store_errors_total",
      help: "Store calls that failed or were refused while the store was failing, by operation",
      labelNames: ["operation"],
      registers,
    }),
    trackersDropped: new Counter({
      name: "resync_trackers_dropped_total",
      help: "(device, user) pairs from /keys/query not tracked, by reason: device_cap, queue_full, store",
      labelNames: ["reason"],
      registers,
    }),
    cache: new Counter({
      name: "resync_cache_lookups_total",
      help: "Cache lookups by cache and result",
      labelNames: ["cache", "result"],
      registers,
    }),
    retryQueue: gauge("resync_retry_queue_depth", "Refreshes waiting for a retry", sources.retryQueueDepth),
    backoff: gauge(
      "resync_destinations_in_backoff",
      "Destinations currently backed off",
      sources.destinationsInBackoff,
    ),
    pending: gauge(
      "resync_pending_deliveries",
      "Device-list changes not yet acknowledged by a device",
      sources.pendingDeliveries,
    ),
    longPolls: gauge("resync_open_long_polls", "Client /sync long-polls currently open", sources.openLongPolls),
    // Self-healing (docs/operations.md "Self-healing").
    suspicions: new Counter({
      name: "resync_suspicions_total",
      help: "Signals that a remote user's device list may be stale, by signal",
      labelNames: ["signal"],
      registers,
    }),
    heals: new Counter({
      name: "resync_heals_total",
      help: "Fresh device lists delivered to clients because they differed from what clients were shown, by what triggered the fetch",
      labelNames: ["trigger"],
      registers,
    }),
    freshLists: new Counter({
      name: "resync_fresh_lists_total",
      help: "Fetched device lists by outcome: changed (delivered) or unchanged (equal to the homeserver's view; not delivered)",
      labelNames: ["outcome"],
      registers,
    }),
    auditChecked: new Counter({
      name: "resync_audit_checked_total",
      help: "Tracked remote users re-verified by the audit",
      registers,
    }),
    auditBehind: gauge(
      "resync_audit_behind_seconds",
      "How far the audit's current pass runs behind --audit-interval-ms",
      sources.auditBehindSeconds,
    ),
    views: gauge("resync_homeserver_views", "Remote users whose homeserver view is recorded", sources.homeserverViews),
    federationFailures: new Counter({
      name: "resync_federation_failures_total",
      help: "Failed federation device-list fetches by destination (the first 100 destinations seen; later ones as 'other')",
      labelNames: ["destination"],
      registers,
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
