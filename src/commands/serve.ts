import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import type { Server } from "node:http";
import { hostname } from "node:os";
import type { Config } from "../config/config.ts";
import { Delivery } from "../delivery/delivery.ts";
import { Overlays } from "../delivery/overlays.ts";
import type { KeyCheck } from "../federation/key-check.ts";
import { checkOwnKey, createFederation, loadKey } from "../federation/stack.ts";
import { createLogger, type Logger } from "../observe/log.ts";
import { survivePanics } from "../observe/last-resort.ts";
import { startMemoryReducer } from "../observe/memory-reducer.ts";
import { createMetrics, type Metrics } from "../observe/metrics.ts";
import { createOpsApp, type Readiness } from "../admin/ops-app.ts";
import { drain, type DrainResult, signalExitCode } from "./shutdown.ts";
import { looseKeyFile } from "./key-permissions.ts";
import { timedUpstream } from "../http/timed-upstream.ts";
import { refreshLimiter } from "../resync/rate-limit.ts";
import { Resyncer } from "../resync/resyncer.ts";
import { instrumentedFetch, perDestination } from "../resync/fetch-devices.ts";
import type { Cluster } from "../cluster/cluster.ts";
import { LocalCluster } from "../cluster/local.ts";
import { followReplicas } from "../delivery/replica-events.ts";
import { Audit } from "../resync/audit.ts";
import { Detector } from "../resync/detect.ts";
import { Healer } from "../resync/heal.ts";
import { Views } from "../delivery/views.ts";
import { ViewParser } from "../delivery/view-parser.ts";
import { createApp } from "../engine/node/app.ts";
import type { Services } from "../routes/context.ts";
import { createAuth } from "../http/auth.ts";
import { createClientPaths } from "../http/client-paths.ts";
import { parseTrust, trustPredicate } from "../http/forwarded.ts";
import type { Front } from "../engine/bun/server.ts";
import { createSyncGate } from "../engine/bun/sync-gate.ts";
import type { FrontThreads } from "../engine/bun/threads.ts";
import { chooseEngine, type Engine, newFrontSecret, startBunEngine } from "../engine/bun/start.ts";
import { boundAddress, listen } from "../http/listen.ts";
import { buildRoutes } from "../routes/table.ts";
import { createUpstream } from "../http/upstream.ts";
import { openStore, storeLocation } from "../store/open.ts";
import { type PgStart, openPostgresAtStart } from "./pg-start.ts";
import { guardStore, storeFallback } from "../store/store-guard.ts";
import { VERSION } from "../config/version.ts";
import { FRONT_WORKER, VIEW_WORKER } from "../front-worker-url.ts";

export interface RunningProxy {
  /** The node:http app: the client listener (engine node), or behind the front (engine bun). */
  server: Server;
  address: string; // host:port or unix:/path actually bound, client-facing
  engine: Engine;
  /** The front end's extra threads (--front-threads > 1), for tests and the bench. */
  frontThreads?: FrontThreads;
  opsAddress?: string;
  services: Services;
  log: Logger;
  keyCheck(): KeyCheck | undefined;
  /** Stop accepting, let requests in flight finish until the deadline (default --shutdown-timeout-ms), close the store. */
  close(deadlineMs?: number): Promise<DrainResult>;
}

export interface StartOptions {
  /** The cross-replica coordination to use instead of the one --database selects (tests). */
  cluster?: Cluster;
}

/** This process among the replicas sharing a database: whose lease a claimed retry is (retry-loop.ts). */
function replicaId(): string {
  return `${hostname()}/${process.pid}/${randomBytes(4).toString("hex")}`;
}

/** Wire the proxy's parts together and start listening. Tests call this in-process. */
export async function startProxy(
  config: Config,
  log: Logger = createLogger(config.logLevel),
  opts: StartOptions = {},
): Promise<RunningProxy> {
  const engine = chooseEngine(config.engine); // first: `--engine bun` off Bun fails before anything opens
  const key = await loadKey(config);
  const loose = config.signingKey ? looseKeyFile(config.signingKey) : undefined;
  if (loose) log.warn(loose.message, { mode: loose.mode });
  const location = storeLocation(config.database, config.dataDir);
  // With PostgreSQL, --data-dir still holds the Bun front end's internal socket (0700: who may
  // reach the app behind it).
  if (location.kind === "postgres") mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  // Replicas on one PostgreSQL behave as one process (docs/architecture.md "Cross-replica
  // coordination"); with SQLite, the in-process one: today's local mechanisms, nothing more. A
  // PostgreSQL that is down at start-up costs plain traffic nothing (pg-start.ts); a SQLite
  // store that cannot open is this host's own fault, and refuses to start.
  const opened: PgStart =
    location.kind === "postgres"
      ? await openPostgresAtStart({
          url: location.url,
          log,
          deadlineMs: config.databaseTimeoutMs,
          // A fetch lease is renewed every third of its length while the fetch runs. One
          // federation request's time keeps a live fetch its own even if no renewal gets through
          // for that long; three database deadlines, even if one renewal times out. A killed
          // replica's fetch is taken over that long after its last renewal, so a retry it held
          // is finished within its retry lease plus one fetch timeout.
          leaseMs: Math.max(config.federationTimeoutMs, 3 * config.databaseTimeoutMs),
          cluster: opts.cluster,
        })
      : {
          store: await openStore(location),
          cluster: opts.cluster ?? new LocalCluster(),
          whenOpen: (fn) => fn(),
          stop: () => {},
        };
  const { store: rawStore, cluster } = opened;
  // Declared before the metrics that count its failures: the guard reads them when one happens.
  let metrics: Metrics | undefined;
  const store = guardStore(rawStore, {
    log,
    onError: (operation) => metrics?.storeErrors.inc({ operation }),
    // A database across the network that is down or slow: requests fall back after this.
    deadlineMs: location.kind === "postgres" ? config.databaseTimeoutMs : undefined,
  });
  metrics = createMetrics(undefined, {
    // NaN while the store fails: a scrape must not fail with it, nor show a false zero.
    retryQueueDepth: () => storeFallback(async () => (await store.listRetries()).length, NaN),
    destinationsInBackoff: () =>
      storeFallback(async () => (await store.listBackoffs()).filter((b) => b.retryAt > Date.now()).length, NaN),
    pendingDeliveries: () => storeFallback(() => store.countPending(), NaN),
    openLongPolls: () => delivery.waiters.count,
    auditBehindSeconds: () => audit?.behindSeconds() ?? 0,
    homeserverViews: () => views.count,
  });
  const upstream = timedUpstream(createUpstream(config.upstream), metrics);
  const fed = createFederation(config);
  // One view of which client API prefix (v3 or r0) the homeserver serves, for all our own calls.
  const paths = createClientPaths({ upstream, log });
  const delivery = new Delivery({
    store,
    upstream,
    paths,
    log,
    trackerTtlMs: config.trackerTtlMs,
    maxTrackersPerDevice: config.maxTrackersPerDevice,
    onTrackDropped: (n, why) => metrics?.trackersDropped.inc({ reason: why }, n),
    cluster,
  });

  let keyCheck: KeyCheck | undefined;
  const fetchDevices = instrumentedFetch({
    transport: fed.transport,
    origin: config.serverName,
    key,
    keyCheck: () => keyCheck,
    metrics,
    log,
  });

  const resyncer = new Resyncer({
    store,
    serverName: config.serverName,
    // The transport caps this process at 3 per destination; the cluster caps all replicas at 3.
    fetchDevices: perDestination(fetchDevices, cluster, 3),
    onFresh: (s, ctx) => healer.onFresh(s, ctx),
    onStaleAnswer: () => metrics.staleAnswers.inc(),
    refreshCacheMs: config.refreshCacheMs,
    retry: { initialMs: config.retryInitialMs, maxMs: config.retryMaxMs },
    maxAttempts: config.retryMaxAttempts,
    probeIntervalMs: config.probeIntervalMs,
    retryLease: { holder: replicaId(), ms: config.retryLeaseMs },
    limits: {
      requester: refreshLimiter(cluster, "requester", {
        burst: config.rateUserBurst,
        perSecond: config.rateUserPerMinute / 60,
      }),
      target: refreshLimiter(cluster, "target", {
        burst: config.rateTargetBurst,
        perSecond: config.rateTargetPerMinute / 60,
      }),
    },
    cluster,
    log,
  });
  const overlays = new Overlays({
    store,
    maxAgeMs: config.snapshotMaxAgeMs,
    // Re-verifying an overlay grown older than --snapshot-max-age-ms is background
    // re-verification, as the audit's is: counted as "audit" (docs/operations.md).
    refetch: (u) =>
      void resyncer.run(u, [], { trigger: "audit", why: "overlay re-verification", retry: true }).catch(() => {}),
    cluster,
    log,
  });
  await overlays.ready;
  // Self-healing (docs/architecture.md "Self-healing"): the view and the heal rule always; the
  // signals and the audit unless --detect off.
  const views = new Views({ store, paths, log, cluster });
  const unfollow = followReplicas(cluster, { delivery, overlays, views, store, log });
  const parser = new ViewParser({ url: VIEW_WORKER, log });
  const healer = new Healer({ store, views, overlays, delivery, log, metrics });
  const detect = config.detect === "on";
  const detector = detect
    ? new Detector({
        serverName: config.serverName,
        resyncer,
        views,
        store,
        track: (who, t) => delivery.trackQuery(who, t),
        log,
        metrics,
      })
    : undefined;
  const audit =
    detect && config.auditIntervalMs > 0
      ? new Audit({
          store,
          resyncer,
          serverName: config.serverName,
          intervalMs: config.auditIntervalMs,
          maxPerSecond: config.auditMaxPerSecond,
          log,
          metrics,
          // One replica at a time walks, so N replicas audit at one budget (docs/scaling.md).
          lease: cluster.lease("audit"),
        })
      : undefined;
  const auth = createAuth({
    upstream,
    paths,
    log,
    onCache: (hit) => metrics.cache.inc({ cache: "whoami", result: hit ? "hit" : "miss" }),
  });
  const services: Services = {
    auth,
    resyncer,
    delivery,
    overlays,
    store,
    metrics,
    log,
    heal: { views, parser, healer, detector, audit },
  };
  const trusted = trustPredicate(parseTrust(config.trustedProxies));
  const routes = buildRoutes();
  // Engine bun: a byte-level front end on --listen relays pass-through requests itself and
  // sends intercepted ones to this same app on an internal socket (engine/bun/).
  const frontSecret = engine === "bun" ? newFrontSecret() : undefined;
  const app = createApp({ config, upstream, trusted, services, frontSecret }, routes);
  let front: Front | undefined;
  let server: Server;
  let threads: FrontThreads | undefined;
  if (frontSecret !== undefined) {
    ({ front, server, threads } = await startBunEngine({
      config,
      app,
      routes,
      trusted,
      secret: frontSecret,
      log,
      metrics,
      syncGate: createSyncGate(services),
      threads: { count: config.frontThreads, url: FRONT_WORKER, svc: services },
    }));
  } else server = await listen(config.listen, app);
  if (config.frontThreads > 1 && !threads) {
    // Only the Bun front end on a TCP port can share it between threads.
    log.warn("--front-threads is ignored: it needs engine bun and a host:port --listen", {
      engine,
      listen: config.listen,
    });
  }
  const address = front ? front.address : boundAddress(server);

  let draining = false;
  const readiness: Readiness = { store, upstream, paths, keyCheck: () => keyCheck, draining: () => draining };
  const ops = config.metricsListen
    ? await listen(
        config.metricsListen,
        createOpsApp({
          metrics,
          readiness,
          services,
          config,
          upstream,
          beforeScrape: threads && (() => threads!.flush()),
        }),
      )
    : undefined;

  // The retry loop and the audit read the store at once: they start when it is open.
  opened.whenOpen(() => {
    resyncer.start();
    audit?.start();
  });
  const housekeeping = setInterval(async () => {
    await views.flush(); // a view written after the expiry would outlive its trackers
    if ((await storeFallback(() => delivery.expireTrackers(), 0)) > 0)
      await storeFallback(() => views.resync(), undefined);
  }, 3_600_000);
  housekeeping.unref();
  const reducer = startMemoryReducer(log);
  const checkKey = async () => {
    keyCheck = await checkOwnKey(config, key, fed);
    const fields = { keyId: key.keyId, status: keyCheck.status, detail: keyCheck.detail };
    if (keyCheck.status === "published") log.info("signing key is published by the homeserver", fields);
    else if (keyCheck.status === "mismatch")
      log.error("SIGNING KEY IS NOT THE HOMESERVER'S: federation disabled", fields);
    else
      log.warn("COULD NOT VERIFY that the homeserver publishes our signing key; remote servers may answer 401", fields);
  };
  void checkKey();

  log.info("listening", {
    version: VERSION,
    listen: address,
    engine,
    frontThreads: threads ? config.frontThreads : undefined,
    metrics: ops ? boundAddress(ops) : undefined,
    upstream: config.upstream,
    serverName: config.serverName,
    keyId: key.keyId,
  });
  const close = async (deadlineMs = config.shutdownTimeoutMs) => {
    // /readyz answers 503 from now on, so a load balancer stops sending new clients here while
    // the ones already connected are served; the ops listener closes last for that reason.
    draining = true;
    opened.stop();
    resyncer.stop();
    // Released now, so another replica walks on while this one drains.
    const auditStopped = audit?.stop();
    parser.close();
    clearInterval(housekeeping);
    reducer?.stop();
    // The front first: its requests in flight need the app behind it until they finish. It has
    // the close/closeIdleConnections/closeAllConnections that drain() uses of a Server.
    const result = await drain([(front as unknown as Server | undefined) ?? server], {
      deadlineMs,
      busy: () => resyncer.inflight > 0,
    });
    if (front) await drain([server], { deadlineMs: 1000 });
    if (ops) await drain([ops], { deadlineMs: Math.min(deadlineMs, 1000) });
    fed.transport.close();
    // Every commit is already on disk (synchronous=FULL); closing checkpoints the WAL. The views
    // still waiting for their coalesced write go first.
    await storeFallback(() => views.close(), undefined);
    unfollow();
    await auditStopped;
    await store.close();
    await cluster.close();
    return result;
  };
  return {
    server,
    address,
    engine,
    frontThreads: threads,
    opsAddress: ops ? boundAddress(ops) : undefined,
    services,
    log,
    keyCheck: () => keyCheck,
    close,
  };
}

/** `serve`: run until a signal. SIGTERM drains; a second signal exits at once. */
export async function serve(config: Config): Promise<void> {
  const proxy = await startProxy(config);
  const log = proxy.log;
  survivePanics(log);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      log.warn("second signal: exiting now, cutting requests in flight", { signal });
      process.exit(signalExitCode(signal));
    }
    stopping = true;
    log.info("shutting down: refusing new connections, finishing requests in flight", {
      signal,
      deadlineMs: config.shutdownTimeoutMs,
    });
    proxy.close().then(
      (r) => {
        if (r.drained) log.info("stopped", { waitedMs: r.waitedMs });
        else log.warn("stopped: the shutdown deadline passed, open requests were cut", { waitedMs: r.waitedMs });
        process.exit(0);
      },
      (e: unknown) => {
        log.error("shutdown failed", { error: e });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}
