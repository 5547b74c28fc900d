// Rows of both back ends (sqlite-store.ts, postgres-store.ts) to and from the Store's types:
// JSON columns hold values the store never queries inside.
import type { Sql, TransactionSql } from "postgres";
import type { DeviceSnapshot } from "../matrix/device.ts";
import type { RetryEntry } from "./store.ts";

/** How many sync tokens a pending row remembers: a client may retry a few old `since` values. */
export const CARRIED_KEEP = 8;
/** Sliding-sync connections remembered per device (the least recently seen go first). */
export const CONNS_KEEP = 16;

type Row = Record<string, unknown>;

/**
 * A list of strings as a PostgreSQL text[] expression, sent as one JSON parameter: the client
 * then needs no array types (postgres.ts turns fetch_types off).
 */
export function textList(sql: Sql | TransactionSql, xs: readonly string[]) {
  return sql`ARRAY(SELECT json_array_elements_text(${JSON.stringify(xs)}::text::json))`;
}

/** PostgreSQL hands bigint columns and counts over as strings. */
export const num = (v: unknown): number => Number(v);
const obj = (v: unknown): Record<string, unknown> | undefined =>
  typeof v === "string" ? (JSON.parse(v) as Record<string, unknown>) : undefined;

export function snapshotColumns(s: DeviceSnapshot) {
  return {
    userId: s.userId,
    streamId: s.streamId,
    devices: JSON.stringify(s.devices),
    masterKey: s.masterKey ? JSON.stringify(s.masterKey) : null,
    selfSigningKey: s.selfSigningKey ? JSON.stringify(s.selfSigningKey) : null,
    fetchedAt: s.fetchedAt,
    invalidDevices: s.invalidDevices?.length ? JSON.stringify(s.invalidDevices) : null,
  };
}

export function fromSnapshotRow(r: Row): DeviceSnapshot {
  const s: DeviceSnapshot = {
    userId: String(r.user_id),
    streamId: num(r.stream_id),
    devices: JSON.parse(String(r.devices)) as DeviceSnapshot["devices"],
    fetchedAt: num(r.fetched_at),
  };
  const mk = obj(r.master_key);
  const ssk = obj(r.self_signing_key);
  if (mk) s.masterKey = mk;
  if (ssk) s.selfSigningKey = ssk;
  const invalid = r.invalid_devices;
  if (typeof invalid === "string") s.invalidDevices = JSON.parse(invalid) as string[];
  return s;
}

export function fromRetryRow(r: Row): RetryEntry {
  const e: RetryEntry = {
    userId: String(r.user_id),
    attempts: num(r.attempts),
    dueAt: num(r.due_at),
    requestedBy: JSON.parse(String(r.requested_by)) as string[],
  };
  if (r.last_error !== null && r.last_error !== undefined) e.lastError = String(r.last_error);
  if (r.heal_trigger !== null && r.heal_trigger !== undefined) e.trigger = String(r.heal_trigger);
  return e;
}
