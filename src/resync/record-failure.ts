// What a failed fetch leaves in the store: the destination's backoff when the failure says the
// destination itself is unwell (backoff.ts), and for an explicit refresh the target's retry
// entry, until the attempts are used up. Every path ends by throwing the refresh's failure.
import { FederationError } from "../federation/errors.ts";
import { serverOf } from "../matrix/user-id.ts";
import { StoreUnavailable } from "../store/store-guard.ts";
import type { Backoff } from "../store/store.ts";
import { backoffDelay, backsOffDestination, isRetryable } from "./backoff.ts";
import { RefreshFailure } from "./refresh-errors.ts";
import type { RefreshOutcome, ResyncContext, ResyncOptions, Trigger } from "./resync-types.ts";
import type { RetryLoop } from "./retry-loop.ts";

/** Records the failed fetch of target (err), then throws what its refreshes are told. */
export async function recordFailure(
  o: ResyncOptions,
  retries: RetryLoop,
  now: () => number,
  target: string,
  requestedBy: string[],
  ctx: ResyncContext,
  err: unknown,
): Promise<never> {
  // Our store failed, or the database the replicas share (a destination slot, cluster/), not
  // the remote: nothing is recorded against the destination (the caller answers 503, a retry
  // entry stays as it was).
  if (err instanceof StoreUnavailable) throw err;
  const dest = serverOf(target);
  const e =
    err instanceof FederationError ? err : new FederationError("transport", String((err as Error)?.message ?? err));
  const at = now();
  let destRetryAt = 0;
  if (backsOffDestination(e)) {
    const b = await o.store.getBackoff(dest);
    const failures = (b?.failures ?? 0) + 1;
    destRetryAt = at + backoffDelay(o.retry, failures);
    // A background check (ctx.retry false: a suspicion, the audit) does not use up the probe
    // an explicit refresh may make: a person asking next gets the server tried for them.
    const firstProbe = ctx.retry === false ? 0 : at;
    await o.store.putBackoff({
      destination: dest,
      failures,
      retryAt: destRetryAt,
      lastProbeAt: b?.lastProbeAt ?? firstProbe,
    });
  }
  o.onFailure?.(target, e);
  if (ctx.retry === false) throw new RefreshFailure(e);
  if (!isRetryable(e)) {
    await o.store.deleteRetry(target);
    throw new RefreshFailure(e);
  }
  const prev = await o.store.getRetry(target);
  const attempts = (prev?.attempts ?? 0) + 1;
  if (attempts > o.maxAttempts) {
    await o.store.deleteRetry(target);
    o.log.warn("giving up refreshing a device list", { userId: target, attempts: attempts - 1, error: e.message });
    throw new RefreshFailure(e);
  }
  const dueAt = Math.max(at + backoffDelay(o.retry, attempts), destRetryAt);
  const who = [...new Set([...(prev?.requestedBy ?? []), ...requestedBy])].slice(-50);
  await o.store.putRetry({
    userId: target,
    attempts,
    dueAt,
    requestedBy: who,
    lastError: e.message,
    trigger: ctx.trigger,
  });
  retries.moved();
  o.log.info("device list refresh failed; retry scheduled", {
    userId: target,
    attempts,
    inMs: dueAt - at,
    error: e.message,
  });
  throw new RefreshFailure(e, dueAt - at);
}

/** A destination in backoff, its probe used: the refresh waits in the retry queue. */
export async function queueBehindBackoff(
  o: ResyncOptions,
  retries: RetryLoop,
  now: () => number,
  target: string,
  requester: string,
  b: Backoff,
  trigger: Trigger,
): Promise<RefreshOutcome> {
  const dest = serverOf(target);
  const at = now();
  const prev = await o.store.getRetry(target);
  const requestedBy = [...new Set([...(prev?.requestedBy ?? []), requester])].slice(-50);
  await o.store.putRetry({
    userId: target,
    attempts: prev?.attempts ?? 0,
    dueAt: b.retryAt,
    requestedBy,
    lastError: prev?.lastError ?? "destination in backoff",
    trigger,
  });
  retries.moved();
  retries.schedule();
  const error = new FederationError("transport", `${dest} is unreachable and in backoff; not contacting it yet`);
  return { kind: "failed", error, nextRetryInMs: b.retryAt - at };
}
