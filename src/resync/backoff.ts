// Retry and backoff arithmetic. Synapse's per-destination rules (docs/architecture.md "Federation"): exponential
// with jitter 0.8–1.4; 4xx other than 401/429 mean "the remote understood and said no", so
// they do not back off the destination; any success resets it.
import type { FederationError } from "../federation/errors.ts";

export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  random?: () => number;
}

export function backoffDelay(p: BackoffPolicy, failures: number): number {
  const base = Math.min(p.maxMs, p.initialMs * 2 ** Math.max(0, failures - 1));
  const jitter = 0.8 + (p.random ?? Math.random)() * 0.6;
  return Math.min(p.maxMs, Math.round(base * jitter));
}

/** Does this failure say the destination itself is unwell? */
export function backsOffDestination(e: FederationError): boolean {
  if (e.kind === "transport" || e.kind === "timeout") return true;
  if (e.kind !== "remote" || e.status === undefined) return false;
  return e.status >= 500 || e.status === 401 || e.status === 429;
}

/**
 * Is another attempt worth it? The MSC's retry cases (transport failure, 5xx, 401, 429) are
 * exactly the "destination unwell" ones; not-found, refused addresses, invalid or oversized
 * answers and other 4xx are the remote's considered answer, so they are final.
 */
export const isRetryable = backsOffDestination;
