// One access-log line and one metric sample per client request, with a request id that is also
// returned as X-Request-Id. Wraps the whole client listener, so pass-through and intercepted
// routes are measured the same way.
import { randomUUID } from "node:crypto";
import type { Level, Logger } from "../observe/log.ts";
import type { Metrics } from "../observe/metrics.ts";
import { clientAddress } from "./forwarded.ts";
import type { Listener } from "./listen.ts";
import { CLIENT_VERSIONS, Router } from "./router.ts";

/** A small fixed set, never the raw path: metric labels must stay bounded. */
export type RouteClass =
  | "refresh"
  | "sync"
  | "sliding_sync"
  | "keys_query"
  | "keys_changes"
  | "versions"
  | "health"
  | "passthrough";

// The same patterns as the route table (routes/table.ts), so a class names what the proxy did.
const classes = new Router<RouteClass>();
classes.add(["GET"], "/_matrix/client/versions", "versions");
classes.add(["POST"], `/_matrix/client/${CLIENT_VERSIONS}/user/:userId/devices/refresh`, "refresh");
classes.add(["POST"], "/_matrix/client/unstable/org.matrix.msc2638/user/:userId/devices/refresh", "refresh");
classes.add(["GET", "POST"], "/_matrix/unstable/org.matrix.msc2638/user/:userId/devices", "refresh");
classes.add(["GET"], `/_matrix/client/${CLIENT_VERSIONS}/sync`, "sync");
classes.add(["POST"], "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", "sliding_sync");
classes.add(["POST"], `/_matrix/client/${CLIENT_VERSIONS}/keys/query`, "keys_query");
classes.add(["POST"], "/_matrix/client/unstable/keys/query", "keys_query");
classes.add(["GET"], `/_matrix/client/${CLIENT_VERSIONS}/keys/changes`, "keys_changes");
classes.add(["GET"], "/_resync/healthz", "health");

export function routeClass(method: string, path: string): RouteClass {
  // A CORS preflight is answered for our routes by the app itself: give it the route's class.
  const methods = method === "OPTIONS" ? ["POST", "GET"] : [method];
  for (const m of methods) {
    const hit = classes.match(m, path);
    if (hit) return hit.handler;
  }
  return "passthrough";
}

// An inbound id is echoed into logs and headers: keep it short and free of anything that could
// forge a log field or split a header.
const VALID_ID = /^[A-Za-z0-9._~:/+=@-]{1,128}$/;

/** The request's id: an inbound X-Request-Id only from a trusted peer (--trusted-proxies), else a new one. */
export function requestIdFor(
  inbound: unknown,
  peer: string,
  trusted: (ip: string) => boolean,
  newId: () => string,
): string {
  return typeof inbound === "string" && VALID_ID.test(inbound) && trusted(peer) ? inbound : newId();
}

// Query parameters whose value is a credential (client-server API §Using access tokens; the
// refresh_token of §Refreshing access tokens). A homeserver decodes parameter names before it
// looks them up, so `access%5Ftoken` works there: we compare decoded names, never the raw text.
const SECRET_PARAMS = new Set(["access_token", "refresh_token"]);
const decodeName = (name: string): string =>
  // Lenient like the homeserver's own decoder (Python's unquote_plus): a malformed escape stays.
  name.replace(/\+/g, " ").replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));

/**
 * The request target as the access logs write it: the value of every credential parameter
 * replaced, whatever encoding spells its name. Both access logs (this one and the front end's,
 * engine/bun/access-log.ts) use it, so pass-through and intercepted requests are masked alike.
 */
export function redactTarget(target: string): string {
  const q = target.indexOf("?");
  if (q === -1) return target;
  // `;` too: Python's query parser split on it before 3.9.2, so a homeserver on an older Python
  // reads a parameter after a `;`.
  const parts = target.slice(q + 1).split(/([&;])/);
  let changed = false;
  for (let i = 0; i < parts.length; i += 2) {
    const p = parts[i]!;
    const eq = p.indexOf("=");
    const name = eq === -1 ? p : p.slice(0, eq);
    if (eq !== -1 && SECRET_PARAMS.has(decodeName(name).toLowerCase())) {
      parts[i] = `${name}=<redacted>`;
      changed = true;
    }
  }
  return changed ? target.slice(0, q + 1) + parts.join("") : target;
}

/** 499: the client closed the connection before we answered (nginx's convention). */
export const CLIENT_CLOSED = 499;

/**
 * Log levels, chosen so the default (info) stays quiet on a busy server: a /sync long-poll or
 * pass-through request that went fine is routine (debug); a refresh is the feature itself and
 * rate-limited per user, so every refresh is logged (info); any 5xx is a problem (warn).
 */
export function levelFor(route: RouteClass, status: number): Level {
  if (status >= 500 && status !== CLIENT_CLOSED) return "warn";
  if (route === "refresh" && status !== CLIENT_CLOSED) return "info";
  return "debug";
}

/** One finished request, as both engines' access logs describe it. */
export interface AccessEntry {
  id: string;
  method: string;
  route: RouteClass;
  /** Sent to the client; CLIENT_CLOSED when no response head was sent. */
  status: number;
  durationMs: number;
  /** Computed only when the line is written (it reads X-Forwarded-For). */
  client: () => string;
  target: string;
  /** The response did not reach its end (the client or the homeserver went away). */
  aborted: boolean;
}

/** The one access-log line format (docs/operations.md "Logs"), with the one redaction of credentials. */
export function writeAccessLine(log: Logger, e: AccessEntry): void {
  const level = levelFor(e.route, e.aborted ? CLIENT_CLOSED : e.status);
  if (log.writes?.(level) === false) return;
  log[level]("request", {
    request_id: e.id,
    method: e.method,
    route: e.route,
    status: e.status,
    duration_ms: Math.round(e.durationMs * 10) / 10,
    client: e.client(),
    target: redactTarget(e.target),
    ...(e.aborted ? { aborted: true } : {}),
  });
}

export interface RequestLogOptions {
  log: Logger;
  metrics?: Metrics;
  /** Peers whose X-Request-Id (and X-Forwarded-For) we believe: --trusted-proxies. */
  trusted: (ip: string) => boolean;
  newId?: () => string;
  now?: () => number;
}

/** Middleware factory: wraps a request listener with the request id, access log and metrics. */
export function requestLog(o: RequestLogOptions): (next: Listener) => Listener {
  const newId = o.newId ?? randomUUID;
  const now = o.now ?? (() => performance.now());
  return (next) =>
    function loggedRequest(req, res) {
      const started = now();
      const inbound = req.headers["x-request-id"];
      const id = requestIdFor(inbound, req.socket.remoteAddress ?? "", o.trusted, newId);
      // The homeserver (or the reverse proxy in front of it) sees the same id: one id joins
      // the lines of every hop. An untrusted client's own id is replaced, never forwarded.
      req.headers["x-request-id"] = id;
      res.setHeader("x-request-id", id);
      const target = req.url ?? "/";
      const q = target.indexOf("?");
      const method = req.method ?? "GET";
      const route = routeClass(method, q === -1 ? target : target.slice(0, q));
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        const aborted = !res.writableFinished;
        const status = res.headersSent ? res.statusCode : CLIENT_CLOSED;
        o.metrics?.requests.inc({ route, status: String(status) });
        writeAccessLine(o.log, {
          id,
          method,
          route,
          status,
          durationMs: now() - started,
          client: () => clientAddress(req, o.trusted),
          target,
          aborted,
        });
      };
      res.once("finish", finish);
      res.once("close", finish);
      next(req, res);
    };
}
