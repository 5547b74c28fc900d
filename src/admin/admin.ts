// The admin API, on the operator listener only (--metrics-listen) and for homeserver admins
// only (admin-auth.ts). Paths under /_resync/admin/v1/, a prefix no homeserver serves:
//   POST /users/{userId}/refresh       refresh one user now; waits up to --refresh-wait-ms
//   POST /servers/{serverName}/refresh refresh every known user of a server (202, background)
//   GET  /servers/{serverName}/refresh progress of that job
//   GET  /retries                      users waiting for a retry
//   GET  /backoffs                     destinations backed off
//   GET  /heals                        the last device lists healed: who, what changed, why
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Config } from "../config/config.ts";
import { FederationError } from "../federation/errors.ts";
import { decodeUserIdParam, isValidServerName, isValidUserId } from "../matrix/user-id.ts";
import { serverOf } from "../matrix/user-id.ts";
import type { Services } from "../routes/context.ts";
import { UpstreamAuthError } from "../http/auth.ts";
import { MatrixError } from "../matrix/errors.ts";
import { relayRefusal, sendError, sendJson } from "../http/reply.ts";
import type { RefreshOutcome } from "../resync/resync-types.ts";
import { refreshFailed } from "../resync/failure.ts";
import type { Upstream } from "../http/upstream.ts";
import type { DeviceSnapshot } from "../matrix/device.ts";
import { requireAdmin } from "./admin-auth.ts";
import { ServerJobs } from "./admin-jobs.ts";

export const ADMIN_PREFIX = "/_resync/admin/v1/";

export interface AdminOptions {
  services: Services;
  upstream: Upstream;
  config: Config;
  now?: () => number;
}

type Answer = { status: number; body: unknown };

export function createAdmin(o: AdminOptions): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  const { services: svc, config } = o;
  const now = o.now ?? Date.now;
  const jobs = new ServerJobs({ store: svc.store, resyncer: svc.resyncer, log: svc.log, now });

  async function route(method: string, path: string, admin: string): Promise<Answer> {
    const rest = path.slice(ADMIN_PREFIX.length).replace(/\/$/, "");
    const user = /^users\/([^/]+)\/refresh$/.exec(rest);
    const server = /^servers\/([^/]+)\/refresh$/.exec(rest);
    if (user && method === "POST") return refreshUser(decodeUserIdParam(user[1]!), admin);
    if (server && (method === "POST" || method === "GET")) {
      const name = decodeUserIdParam(server[1]!);
      if (name === undefined || !isValidServerName(name))
        throw new MatrixError("M_INVALID_PARAM", `Not a valid server name: ${JSON.stringify(name ?? server[1])}`);
      if (name === config.serverName)
        throw new MatrixError(
          "M_INVALID_PARAM",
          `${name} is our own server: the homeserver is authoritative for its users`,
        );
      if (method === "GET") {
        const job = jobs.get(name);
        if (!job) throw new MatrixError("M_NOT_FOUND", `No refresh of ${name} has run since the proxy started`);
        return { status: 200, body: job };
      }
      const { job, started } = await jobs.start(name, `admin:${admin}`);
      svc.log.info("admin: refresh every user of a server", { admin, server: name, users: job.total, started });
      return { status: 202, body: { ...job, status: started ? "started" : "already_running" } };
    }
    if (rest === "retries" && method === "GET") {
      const t = now();
      const retries = (await svc.store.listRetries()).map((r) => ({
        user_id: r.userId,
        attempts: r.attempts,
        due_in_ms: Math.max(0, r.dueAt - t),
        requested_by: r.requestedBy,
        last_error: r.lastError,
      }));
      return { status: 200, body: { retries } };
    }
    if (rest === "backoffs" && method === "GET") {
      const t = now();
      const destinations = (await svc.store.listBackoffs()).map((b) => ({
        destination: b.destination,
        failures: b.failures,
        in_backoff: b.retryAt > t,
        retry_in_ms: Math.max(0, b.retryAt - t),
      }));
      return { status: 200, body: { destinations } };
    }
    if (rest === "heals" && method === "GET") {
      return { status: 200, body: { heals: svc.heal?.healer.recent() ?? [] } };
    }
    const known = user || server || rest === "retries" || rest === "backoffs" || rest === "heals";
    throw new MatrixError("M_UNRECOGNIZED", known ? "Method not allowed" : "Unrecognized admin request", {
      status: known ? 405 : 404,
    });
  }

  async function refreshUser(userId: string | undefined, admin: string): Promise<Answer> {
    if (userId === undefined || !isValidUserId(userId))
      throw new MatrixError("M_INVALID_PARAM", `Not a valid Matrix user ID: ${JSON.stringify(userId)}`);
    if (serverOf(userId) === config.serverName)
      throw new MatrixError("M_INVALID_PARAM", `${userId} is a local user: the homeserver is authoritative`);
    svc.log.info("admin: refresh a user", { admin, userId });
    // runWithin() skips the rate limits and the destination backoff: an admin asked explicitly.
    let r: RefreshOutcome;
    try {
      r = await svc.resyncer.runWithin(userId, [`admin:${admin}`], config.refreshWaitMs, {
        trigger: "admin",
        why: `asked by ${admin}`,
        retry: true,
      });
    } catch (e) {
      throw refreshFailed(userId, new FederationError("transport", String((e as Error)?.message ?? e)));
    }
    if (r.kind === "pending") return { status: 202, body: { user_id: userId, status: "pending" } };
    if (r.kind === "failed") throw refreshFailed(userId, r.error, r.nextRetryInMs);
    if (r.kind !== "ok") throw new Error(`unexpected refresh outcome ${r.kind}`);
    return { status: 200, body: summary(r.snapshot) };
  }

  return async function admin(req, res) {
    const path = (req.url ?? "/").split("?")[0]!;
    req.resume(); // no admin request has a body we use
    try {
      const who = await requireAdmin(req, svc.auth, o.upstream);
      const a = await route(req.method ?? "GET", path, who);
      sendJson(res, a.status, a.body);
    } catch (e) {
      if (e instanceof UpstreamAuthError) return relayRefusal(res, e);
      if (!(e instanceof MatrixError)) svc.log.error("admin request failed", { path, error: e });
      sendError(res, e);
    }
  };
}

function summary(s: DeviceSnapshot) {
  return {
    user_id: s.userId,
    status: "ok",
    devices: Object.keys(s.devices).length,
    stream_id: s.streamId,
    fetched_at: s.fetchedAt,
  };
}
