// How a fetch that did not give a list reaches the refreshes waiting on it: thrown through the
// single flight (every joiner sees the same error), then read back as a refresh's outcome.
import type { FederationError } from "../federation/errors.ts";
import type { RefreshOutcome } from "./resync-types.ts";

/** A shared limit refused the fetch a refresh was about to start (its joiners are refused too). */
export class Limited extends Error {
  readonly retryAfterMs: number;
  constructor(retryAfterMs: number) {
    super("rate limited");
    this.retryAfterMs = retryAfterMs;
  }
}

export class RefreshFailure extends Error {
  readonly error: FederationError;
  readonly nextRetryInMs?: number;
  constructor(error: FederationError, nextRetryInMs?: number) {
    super(error.message);
    this.error = error;
    if (nextRetryInMs !== undefined) this.nextRetryInMs = nextRetryInMs;
  }
}

/** A failed fetch's outcome; anything else is rethrown, or with `otherwise` given, that. */
export function notOk(e: unknown, otherwise?: RefreshOutcome): RefreshOutcome {
  if (e instanceof RefreshFailure) return { kind: "failed", error: e.error, nextRetryInMs: e.nextRetryInMs };
  if (e instanceof Limited) return { kind: "limited", retryAfterMs: e.retryAfterMs };
  if (otherwise) return otherwise;
  throw e;
}
