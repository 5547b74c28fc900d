import type { IncomingMessage } from "node:http";
import { LRUCache } from "lru-cache";
import type { Logger } from "../observe/log.ts";
import { type ClientPaths, createClientPaths } from "./client-paths.ts";
import { MatrixError } from "../matrix/errors.ts";
import type { Upstream } from "./upstream.ts";

export interface Requester {
  userId: string;
  deviceId: string;
  token: string;
}

/** The homeserver's own 401/403 answer, passed through unchanged (M_UNKNOWN_TOKEN, soft_logout). */
export class UpstreamAuthError extends Error {
  readonly status: number;
  readonly body: Buffer;
  constructor(status: number, body: Buffer) {
    super(`homeserver refused the token (${status})`);
    this.status = status;
    this.body = body;
  }
}

export function accessToken(req: IncomingMessage): string | undefined {
  return tokenOf(req.headers.authorization, req.url ?? "");
}

/** The access token from an Authorization value or the target's `access_token` parameter. */
export function tokenOf(authorization: string | undefined, target: string): string | undefined {
  if (authorization?.startsWith("Bearer ")) return authorization.slice(7).trim() || undefined;
  const q = target.indexOf("?");
  if (q === -1) return undefined;
  return new URLSearchParams(target.slice(q + 1)).get("access_token") || undefined;
}

export interface AuthOptions {
  upstream: Upstream;
  /** The client API's version prefix (v3 or r0), shared with the proxy's other calls. */
  paths?: ClientPaths;
  log?: Logger;
  ttlMs?: number;
  failureTtlMs?: number;
  max?: number;
  /** whoami calls in flight at most (default 32); more wait their turn. */
  concurrency?: number;
  now?: () => number;
  /** Told whether each lookup was answered without a new whoami call (metrics). */
  onCache?: (hit: boolean) => void;
}

/**
 * Resolves access tokens with the homeserver's /account/whoami: the homeserver stays the only
 * authority on tokens. Answers are cached (bounded LRU, TTL) because /sync asks on every poll;
 * refusals are cached briefly so a client hammering with a dead token costs one upstream call.
 */
export function createAuth(o: AuthOptions) {
  const paths = o.paths ?? createClientPaths({ upstream: o.upstream, ...(o.log ? { log: o.log } : {}) });
  const now = o.now ?? Date.now;
  const ok = new LRUCache<string, { who: Requester; at: number }>({ max: o.max ?? 10_000, ttl: o.ttlMs ?? 5 * 60_000 });
  const refused = new LRUCache<string, UpstreamAuthError>({ max: o.max ?? 10_000, ttl: o.failureTtlMs ?? 5_000 });
  const inflight = new Map<string, Promise<Requester>>();
  // A restart brings every client back at once, each with a token we have not seen: one whoami
  // connection per token would flood the homeserver, and our descriptors with it.
  const slots = concurrencyLimit(o.concurrency ?? 32);

  async function lookup(token: string): Promise<Requester> {
    const release = await slots();
    try {
      return await whoami(token);
    } finally {
      release();
    }
  }

  async function whoami(token: string): Promise<Requester> {
    const started = now();
    const res = await paths.call({
      method: "GET",
      path: "account/whoami",
      headers: { authorization: `Bearer ${token}`, "accept-encoding": "identity" },
      headerTimeoutMs: 10_000,
    });
    const body = res.body;
    if (res.status === 401 || res.status === 403) {
      const err = new UpstreamAuthError(res.status, body);
      // A revoked (or soft-logged-out) token must stop working everywhere at once, /sync too.
      ok.delete(token);
      refused.set(token, err);
      throw err;
    }
    let parsed: { user_id?: unknown; device_id?: unknown } = {};
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch {}
    if (res.status !== 200 || typeof parsed.user_id !== "string")
      throw new MatrixError("M_UNKNOWN", `The homeserver's ${res.target} failed (${res.status})`, { status: 502 });
    // Appservice and some admin tokens have no device; such callers still get refreshes.
    const who = {
      userId: parsed.user_id,
      deviceId: typeof parsed.device_id === "string" ? parsed.device_id : "",
      token,
    };
    // Stamped with when the homeserver was asked, not answered: a revocation in between counts.
    ok.set(token, { who, at: started });
    return who;
  }

  return {
    /** Throws MatrixError M_MISSING_TOKEN, UpstreamAuthError, or a 502 MatrixError. */
    async resolve(req: IncomingMessage, fresh?: Freshness): Promise<Requester> {
      const token = accessToken(req);
      if (!token) throw new MatrixError("M_MISSING_TOKEN", "Missing access token");
      return this.resolveToken(token, fresh);
    },
    /** `fresh.maxAgeMs`: a cached success older than this is checked with the homeserver again. */
    async resolveToken(token: string, fresh?: Freshness): Promise<Requester> {
      const entry = ok.get(token);
      const hit = entry && (fresh === undefined || now() - entry.at <= fresh.maxAgeMs) ? entry.who : undefined;
      const no = hit ? undefined : refused.get(token);
      let p = hit || no ? undefined : inflight.get(token);
      // A hit is any answer that cost no new whoami call: cached, refused, or joined in flight.
      o.onCache?.(hit !== undefined || no !== undefined || p !== undefined);
      if (hit) return hit;
      if (no) throw no;
      if (!p) {
        p = lookup(token).finally(() => inflight.delete(token));
        inflight.set(token, p);
      }
      return p;
    },
    /** Peek without a network call: /sync uses it to decide whether to look at a body at all. */
    cached(token: string): Requester | undefined {
      return ok.get(token)?.who;
    },
    /** The version prefix helper this auth calls whoami through (readiness shares it). */
    paths,
  };
}

export interface Freshness {
  maxAgeMs: number;
}

/**
 * Routes that make us send signed federation requests re-check the token this often at most
 * (0: every time). Tokens are cached for minutes because /sync asks on every poll; but a token
 * the homeserver has revoked, or soft-logged-out, must not keep spending our server's
 * federation identity for those minutes.
 */
export const FEDERATION_AUTH: Freshness = { maxAgeMs: 0 };

export type Auth = ReturnType<typeof createAuth>;

/** Waits for one of `n` slots; resolves to the function that frees it. */
function concurrencyLimit(n: number): () => Promise<() => void> {
  let free = n;
  const queue: (() => void)[] = [];
  const release = () => {
    const next = queue.shift();
    if (next) next();
    else free++;
  };
  return () => {
    if (free > 0) {
      free--;
      return Promise.resolve(release);
    }
    return new Promise((resolve) => queue.push(() => resolve(release)));
  };
}
