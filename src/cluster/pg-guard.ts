// Every call the PostgreSQL cluster makes has a deadline and fails as StoreUnavailable, which the
// request paths already turn into a 503 or a plain pass-through. A failure that says its session
// is gone (or no answer in time) replaces the statement pools (store/pg-pool.ts); a statement the
// server refused before it ran goes once more, on a fresh session. Failures are logged as the
// store's are (store/store-guard.ts): one line per second at most, so an operator sees why a
// refresh answered 503.
import type { Logger } from "../observe/log.ts";
import { endedByServer, type ResettablePool, sessionLost } from "../store/pg-pool.ts";
import { StoreUnavailable } from "../store/store-guard.ts";

/** `call` under the deadline, named `op` in the error. */
export type Guard = <T>(op: string, call: () => Promise<T>) => Promise<T>;

export function clusterGuard(pools: readonly ResettablePool[], deadlineMs: number, log?: Logger): Guard {
  let lastLog = -Infinity;
  const failed = (op: string, e: unknown) => {
    const now = Date.now();
    if (now - lastLog >= 1000) {
      lastLog = now;
      log?.error("cluster failure: refreshes answer 503", {
        operation: op,
        error: e instanceof Error ? e.message : String(e),
      });
    }
    return new StoreUnavailable(`cluster ${op}`, e);
  };
  return async <T>(op: string, call: () => Promise<T>): Promise<T> => {
    try {
      return await withDeadline(call(), deadlineMs);
    } catch (e) {
      const timedOut = e instanceof ClusterDeadline;
      if (!sessionLost(e, timedOut)) throw failed(op, e);
      for (const p of pools) p.reset();
      if (timedOut || !endedByServer(e)) throw failed(op, e);
      try {
        return await withDeadline(call(), deadlineMs);
      } catch (e2) {
        throw failed(op, e2);
      }
    }
  };
}

async function withDeadline<T>(p: Promise<T>, deadlineMs: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ClusterDeadline(deadlineMs)), deadlineMs);
  });
  try {
    return await Promise.race([p, late]);
  } catch (e) {
    p.catch(() => {}); // a late failure of the abandoned statement is not unhandled
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

class ClusterDeadline extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
  }
}
