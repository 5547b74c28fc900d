// A fetch's outcome as it lands for the other replicas (cluster/pg-flight.ts): the holder writes
// it into the lease row, a replica that waited on the lease reads it back. The list itself goes
// along: an unchanged list is not stored as a snapshot (heal.ts), yet the waiter answers with it.
import type { Landed } from "../cluster/cluster.ts";
import { FederationError, type FederationErrorKind } from "../federation/errors.ts";
import type { DeviceSnapshot } from "../matrix/device.ts";
import { StoreUnavailable } from "../store/store-guard.ts";

interface Failure {
  kind: FederationErrorKind | "unavailable";
  message: string;
  status?: number;
  nextRetryInMs?: number;
}

export function landedOk(snapshot: DeviceSnapshot, changed: boolean): Landed {
  return { ok: true, result: JSON.stringify({ snapshot, changed }) };
}

export function landedFailure(e: unknown, error?: FederationError, nextRetryInMs?: number): Landed {
  const f: Failure =
    error !== undefined
      ? { kind: error.kind, message: error.message, status: error.status, nextRetryInMs }
      : {
          kind: e instanceof StoreUnavailable ? "unavailable" : "transport",
          message: String((e as Error)?.message ?? e),
        };
  return { ok: false, result: JSON.stringify(f) };
}

export type Decoded =
  | { ok: true; snapshot: DeviceSnapshot; changed: boolean }
  | { ok: false; error: FederationError; nextRetryInMs?: number }
  | { ok: false; unavailable: StoreUnavailable };

export function decodeLanded(l: Landed): Decoded {
  if (l.ok) {
    const r = JSON.parse(l.result) as { snapshot: DeviceSnapshot; changed: boolean };
    return { ok: true, snapshot: r.snapshot, changed: r.changed };
  }
  const f = JSON.parse(l.result) as Failure;
  if (f.kind === "unavailable")
    return { ok: false, unavailable: new StoreUnavailable("refresh on another replica", f.message) };
  const out: Decoded = { ok: false, error: new FederationError(f.kind, f.message, f.status) };
  if (f.nextRetryInMs !== undefined) out.nextRetryInMs = f.nextRetryInMs;
  return out;
}
