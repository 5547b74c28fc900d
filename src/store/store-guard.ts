// A store that fails (a full disk, an I/O error, a write lock another process holds) must cost
// requests only what the proxy adds to them, never the process (docs/operations.md, "When the
// store fails"). Every Store call goes through this guard: a failure is logged, counted and
// rethrown (as a rejection) as StoreUnavailable, which the request paths catch to fall back to plain
// pass-through (/sync, /keys/query) or to answer 503 (a refresh). After a failure the guard
// refuses calls at once for a short cool-down: each failing call may first wait out SQLite's
// busy timeout, and a wait is a stall of the whole event loop. The cool-down ends early when a
// call made after the failure succeeds (/readyz's ping tries even during it): a database that
// is back must not cost 503s for the rest of a second while /readyz already says ready. A
// failure of a call made before one that succeeded (it waited for a session while the database
// came back) starts no cool-down: the database has answered since.
import type { Logger } from "../observe/log.ts";
import type { Store } from "./store.ts";

export class StoreUnavailable extends Error {
  readonly operation: string;
  constructor(operation: string, cause: unknown) {
    super(`the store is unavailable (${operation}): ${cause instanceof Error ? cause.message : String(cause)}`);
    this.operation = operation;
  }
}

/**
 * The database has not been reachable since start-up (commands/pg-start.ts): calls fail as in
 * any outage, but the guard logs none of them (the start-up logs each change of that state).
 */
export class StoreNotOpen extends Error {}

export interface GuardOptions {
  log: Logger;
  /** Counts each failed call (a metric). */
  onError?: (operation: string) => void;
  /** How long calls are refused after a failure. Default 1000 ms. */
  coolDownMs?: number;
  /**
   * A call not settled within this fails (a networked store that is down or slow must cost a
   * request no more than this). Unset: no deadline (SQLite answers at once, or fails).
   */
  deadlineMs?: number;
  now?: () => number;
}

/** `store`, with every method guarded. `ping` always reaches the database: /readyz probes with it. */
export function guardStore(store: Store, o: GuardOptions): Store {
  const now = o.now ?? Date.now;
  const coolDown = o.coolDownMs ?? 1000;
  let refuseUntil = 0;
  let lastLog = -Infinity;
  let lastError: unknown;
  // When the latest call that succeeded was made, and when the cool-down's failure was seen.
  let okAt = -Infinity;
  let failedAt = -Infinity;
  const guarded = {} as Record<string, unknown>;
  for (const name of Object.getOwnPropertyNames(Object.getPrototypeOf(store)) as (keyof Store)[]) {
    const method = store[name];
    if (typeof method !== "function" || (name as string) === "constructor") continue;
    if (name === "close") {
      guarded[name] = () => store.close();
      continue;
    }
    if (name === "recover") continue;
    guarded[name] = async (...args: unknown[]) => {
      if (now() < refuseUntil && name !== "ping") {
        o.onError?.(name);
        throw new StoreUnavailable(name, lastError);
      }
      const attempt = () => {
        const call = (method as (...a: unknown[]) => unknown).apply(store, args);
        return o.deadlineMs === undefined ? call : withDeadline(call, o.deadlineMs);
      };
      const started = now();
      try {
        let result: unknown;
        try {
          result = await attempt();
        } catch (e) {
          // A networked store replaces sessions a database restart left dead (store/pg-pool.ts);
          // a statement the server refused before it ran goes once more, on a fresh session,
          // rather than costing this request (and the cool-down's) a 503.
          if (!store.recover?.(e, e instanceof DeadlineMissed)) throw e;
          result = await attempt();
        }
        okAt = Math.max(okAt, started);
        if (started >= failedAt) refuseUntil = 0;
        return result;
      } catch (e) {
        if (e instanceof StoreNotOpen) {
          // Fails at once, so no cool-down is needed, and none may outlast the store's opening.
          o.onError?.(name);
          throw new StoreUnavailable(name, e);
        }
        const t = now();
        lastError = e;
        if (started >= okAt) {
          failedAt = t;
          refuseUntil = t + coolDown;
        }
        o.onError?.(name);
        // One line per cool-down, not one per request: a failing disk under load would
        // otherwise write thousands.
        if (t - lastLog >= coolDown) {
          lastLog = t;
          o.log.error("store failure: requests fall back to plain pass-through, refreshes answer 503", {
            operation: name,
            error: e instanceof Error ? e.message : String(e),
          });
        }
        throw new StoreUnavailable(name, e);
      }
    };
  }
  return guarded as unknown as Store;
}

class DeadlineMissed extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
  }
}

function withDeadline(call: unknown, ms: number): Promise<unknown> {
  const p = Promise.resolve(call);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineMissed(ms)), ms);
  });
  // The call goes on in the client (it may still commit); its outcome is no longer awaited.
  p.catch(() => {});
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/**
 * fn's result, or `fallback` when the store is unavailable: the request then gets what it
 * would get without the proxy's additions.
 */
export async function storeFallback<T>(fn: () => T | Promise<T>, fallback: T): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof StoreUnavailable) return fallback;
    throw e;
  }
}
