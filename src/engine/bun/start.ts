// Wiring of the Bun engine: the unchanged node:http app on an internal socket, the byte-level
// front end on --listen in front of it and of the homeserver.
import { randomBytes } from "node:crypto";
import { chmodSync } from "node:fs";
import type { Server } from "node:http";
import { join, resolve } from "node:path";
import type { Config } from "../../config/config.ts";
import type { Logger } from "../../observe/log.ts";
import type { Metrics } from "../../observe/metrics.ts";
import { type Handler, intercept } from "../../routes/context.ts";
import { boundAddress, type Listener, listen, parseListen } from "../../http/listen.ts";
import { routeClass } from "../../http/request-log.ts";
import type { Router } from "../../http/router.ts";
import { createAccessLog } from "./access-log.ts";
import { appHop, homeserverHop } from "./hop.ts";
import type { Destination } from "./pool.ts";
import { type Front, startFront } from "./server.ts";
import type { MainSyncGate } from "./sync-gate.ts";
import { type FrontThreads, startFrontThreads, withThreads } from "./threads.ts";
import type { Services } from "../../routes/context.ts";

export type Engine = "bun" | "node";

/** `auto` is bun under Bun; Deno (and `--engine node`) keep the single node:http listener. */
export function chooseEngine(wanted: Config["engine"]): Engine {
  const bun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
  if (wanted === "bun" && !bun) throw new Error("--engine bun: this runtime is not Bun (use --engine node or auto)");
  return wanted === "node" || !bun ? "node" : "bun";
}

/** The secret by which the app believes the front's peer header (engine/node/app.ts admitFront). */
export function newFrontSecret(): string {
  return randomBytes(32).toString("base64url");
}

// sun_path holds 108 bytes on Linux (104 on macOS): a deeper --data-dir falls back to loopback TCP.
const MAX_UNIX_PATH = 100;

/** A unix socket inside --data-dir (only its owner can connect), else 127.0.0.1 on a free port. */
function internalListenAddress(dataDir: string): string {
  const path = join(resolve(dataDir), "front-app.sock");
  return Buffer.byteLength(path) <= MAX_UNIX_PATH ? `unix:${path}` : "127.0.0.1:0";
}

/**
 * intercept() answers, remembered per method and path: hot paths (…/pushrules, …/capabilities,
 * …/profile/…) repeat, and a route-table match costs microseconds per request. Bounded, since
 * paths come from clients: long ones are not kept, and the memo starts over when full.
 */
export function remembered<T>(
  decide: (method: string, path: string) => T,
  max = 4096,
): (method: string, path: string) => T {
  // By method, then path: a joined key was a new string to build and hash per request.
  const memo = new Map<string, Map<string, T>>();
  let size = 0;
  return (method, path) => {
    if (path.length > 256) return decide(method, path);
    let byPath = memo.get(method);
    let v = byPath?.get(path);
    if (v === undefined) {
      v = decide(method, path);
      if (size >= max) {
        memo.clear();
        size = 0;
        byPath = undefined;
      }
      if (!byPath) memo.set(method, (byPath = new Map()));
      byPath.set(path, v);
      size++;
    }
    return v;
  };
}

/** Which requests the front end sends to the app, which it relays, and which are GET /sync. */
export function frontIntercepts(routes: Router<Handler>): (method: string, path: string) => boolean | "sync" {
  return remembered((method, path) => {
    const what = intercept(routes, method, path);
    if (what === undefined) return false;
    return what.kind === "route" && routeClass(method, path) === "sync" ? "sync" : true;
  });
}

export interface BunEngineOptions {
  config: Config;
  app: Listener;
  routes: Router<Handler>;
  trusted: (ip: string) => boolean;
  secret: string;
  log: Logger;
  metrics?: Metrics;
  /** Extra PEM CA for an https homeserver (tests only). */
  upstreamCa?: string;
  /** Decides each GET /sync here (sync-gate.ts); without it the app serves them all. */
  syncGate?: MainSyncGate;
  /** More front-end threads on the same port (threads.ts): how many in all, and their entry. */
  threads?: { count: number; url: string; svc: Services };
}

const LEVELS = ["debug", "info", "warn", "error"] as const;

export interface BunEngine {
  front: Front;
  server: Server;
  threads?: FrontThreads;
}

export async function startBunEngine(o: BunEngineOptions): Promise<BunEngine> {
  const server = await listen(internalListenAddress(o.config.dataDir), o.app);
  const bound = parseListen(boundAddress(server));
  if ("path" in bound) chmodSync(bound.path, 0o600);
  const destination: Destination = "path" in bound ? { unix: bound.path } : { hostname: bound.host, port: bound.port };
  const upstream = new URL(o.config.upstream);
  // Threads share a TCP port; a unix socket or a single thread keeps the plain listener.
  const extra = o.threads && o.syncGate && !("path" in parseListen(o.config.listen)) ? o.threads.count - 1 : 0;
  try {
    const front = startFront({
      listen: o.config.listen,
      reusePort: extra > 0,
      homeserver: homeserverHop({
        upstream,
        headerTimeoutMs: o.config.upstreamHeaderTimeoutMs,
        trusted: o.trusted,
        ca: o.upstreamCa,
      }),
      app: appHop({ destination, secret: o.secret, defaultHost: upstream.host }),
      intercepts: frontIntercepts(o.routes),
      syncGate: o.syncGate,
      access: createAccessLog({ log: o.log, metrics: o.metrics, trusted: o.trusted }),
    });
    if (extra === 0) return { front, server };
    try {
      const threads = await startFrontThreads({
        count: extra,
        url: o.threads!.url,
        gate: o.syncGate!,
        svc: o.threads!.svc,
        log: o.log,
        data: {
          listen: front.address, // the port bound: --listen may have asked for port 0
          upstream: o.config.upstream,
          headerTimeoutMs: o.config.upstreamHeaderTimeoutMs,
          upstreamCa: o.upstreamCa,
          app: destination,
          secret: o.secret,
          trustedProxies: o.config.trustedProxies,
          // The level of the logger in use (a caller may pass its own), not only the flag's.
          logLevel: LEVELS.find((l) => o.log.writes?.(l) !== false) ?? "error",
        },
      });
      return { front: withThreads(front, threads), server, threads };
    } catch (e) {
      front.close();
      throw e;
    }
  } catch (e) {
    server.close();
    throw e;
  }
}
