// Wiring of the Bun engine: the unchanged node:http app on an internal socket, the byte-level
// front end on --listen in front of it and of the homeserver.
import { randomBytes } from "node:crypto";
import { chmodSync } from "node:fs";
import type { Server } from "node:http";
import { join, resolve } from "node:path";
import type { Config } from "../../config.ts";
import type { Logger } from "../../ops/log.ts";
import type { Metrics } from "../../ops/metrics.ts";
import { type Handler, intercept } from "../app.ts";
import { boundAddress, type Listener, listen, parseListen } from "../listen.ts";
import { routeClass } from "../request-log.ts";
import type { Router } from "../router.ts";
import { createAccessLog } from "./access-log.ts";
import { appHop, homeserverHop } from "./hop.ts";
import type { Destination } from "./pool.ts";
import { type Front, startFront } from "./server.ts";
import type { SyncGate } from "./sync-gate.ts";

export type Engine = "bun" | "node";

/** `auto` is bun under Bun; Deno (and `--engine node`) keep the single node:http listener. */
export function chooseEngine(wanted: Config["engine"]): Engine {
  const bun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
  if (wanted === "bun" && !bun) throw new Error("--engine bun: this runtime is not Bun (use --engine node or auto)");
  return wanted === "node" || !bun ? "node" : "bun";
}

/** The secret by which the app believes the front's peer header (app.ts admitFront). */
export function newFrontSecret(): string {
  return randomBytes(32).toString("base64url");
}

// sun_path holds 108 bytes on Linux (104 on macOS): a deeper --data-dir falls back to loopback TCP.
const MAX_UNIX_PATH = 100;

/** A unix socket inside --data-dir (only its owner can connect), else 127.0.0.1 on a free port. */
export function internalListenAddress(dataDir: string): string {
  const path = join(resolve(dataDir), "front-app.sock");
  return Buffer.byteLength(path) <= MAX_UNIX_PATH ? `unix:${path}` : "127.0.0.1:0";
}

/**
 * intercept() answers, remembered per method and path: hot paths (…/pushrules, …/capabilities,
 * …/profile/…) repeat, and a route-table match costs microseconds per request. Bounded, since
 * paths come from clients: long ones are not kept, and the memo starts over when full.
 */
export function remembered<T>(decide: (method: string, path: string) => T, max = 4096): (method: string, path: string) => T {
  const memo = new Map<string, T>();
  return (method, path) => {
    if (path.length > 256) return decide(method, path);
    const key = `${method} ${path}`;
    let v = memo.get(key);
    if (v === undefined) {
      v = decide(method, path);
      if (memo.size >= max) memo.clear();
      memo.set(key, v);
    }
    return v;
  };
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
  syncGate?: SyncGate;
}

export async function startBunEngine(o: BunEngineOptions): Promise<{ front: Front; server: Server }> {
  const server = await listen(internalListenAddress(o.config.dataDir), o.app);
  const bound = parseListen(boundAddress(server));
  if ("path" in bound) chmodSync(bound.path, 0o600);
  const destination: Destination = "path" in bound ? { unix: bound.path } : { hostname: bound.host, port: bound.port };
  const upstream = new URL(o.config.upstream);
  try {
    const front = startFront({
      listen: o.config.listen,
      homeserver: homeserverHop({ upstream, headerTimeoutMs: o.config.upstreamHeaderTimeoutMs, trusted: o.trusted, ca: o.upstreamCa }),
      app: appHop({ destination, secret: o.secret, defaultHost: upstream.host }),
      intercepts: remembered((method, path) => {
        const what = intercept(o.routes, method, path);
        if (what === undefined) return false;
        return what.kind === "route" && routeClass(method, path) === "sync" ? "sync" : true;
      }),
      syncGate: o.syncGate,
      access: createAccessLog({ log: o.log, metrics: o.metrics, trusted: o.trusted }),
    });
    return { front, server };
  } catch (e) {
    server.close();
    throw e;
  }
}
