// The resyncer's one way to ask a remote server for a device list: the signed federation
// request (federation/devices.ts), refused up front while our key is known not to be the
// homeserver's, and counted. Lives here rather than in the wiring so the refresh flow reads
// from the route (routes/refresh.ts) through the Resyncer to the store without a detour.
import type { Cluster } from "../cluster/cluster.ts";
import { fetchUserDevices, logDroppedParts } from "../federation/devices.ts";
import { FederationError } from "../federation/errors.ts";
import type { KeyCheck } from "../federation/key-check.ts";
import type { SigningKey } from "../federation/signing.ts";
import type { FederationTransport } from "../federation/transport.ts";
import type { DeviceSnapshot } from "../matrix/device.ts";
import { serverOf } from "../matrix/user-id.ts";
import type { Logger } from "../observe/log.ts";
import type { Metrics } from "../observe/metrics.ts";

export interface FetchDevicesOptions {
  transport: FederationTransport;
  /** Our server name: the homeserver's, whose key signs the request. */
  origin: string;
  key: SigningKey;
  /** The last check of our key against the homeserver's published keys, if any has finished. */
  keyCheck: () => KeyCheck | undefined;
  metrics: Metrics;
  log: Logger;
}

// Bounded label values for the federation metrics (docs/operations.md "Metrics").
const destinationClass = (server: string) =>
  /^\[|^\d+\.\d+\.\d+\.\d+(:|$)/.test(server) ? "ip" : server.includes(":") ? "name_port" : "name";

export function instrumentedFetch(o: FetchDevicesOptions): (userId: string) => Promise<{ snapshot: DeviceSnapshot }> {
  const { metrics, log } = o;
  // Failures by destination for the operator's dashboard, bounded: the first 100 names, then "other".
  const destinations = new Set<string>();
  const destinationLabel = (d: string) =>
    destinations.has(d) || (destinations.size < 100 && destinations.add(d)) ? d : "other";
  return async (userId) => {
    // A key the homeserver does not publish makes every remote answer 401: refuse up front.
    const check = o.keyCheck();
    if (check?.status === "mismatch") throw new FederationError("refused", `federation is disabled: ${check.detail}`);
    const started = performance.now();
    const dest = destinationClass(serverOf(userId));
    try {
      const r = await fetchUserDevices({ transport: o.transport, origin: o.origin, key: o.key }, userId);
      metrics.federationRequests.inc({ destination_class: dest, outcome: "ok" });
      metrics.federationLatency.observe({ outcome: "ok" }, (performance.now() - started) / 1000);
      if (r.dropped.devices) metrics.droppedParts.inc({ part: "device" }, r.dropped.devices);
      if (r.dropped.masterKey) metrics.droppedParts.inc({ part: "master_key" });
      if (r.dropped.selfSigningKey) metrics.droppedParts.inc({ part: "self_signing_key" });
      logDroppedParts(log, userId, r.dropped);
      return r;
    } catch (e) {
      const outcome = e instanceof FederationError ? e.kind : "transport";
      metrics.federationRequests.inc({ destination_class: dest, outcome });
      if (outcome !== "not_found") metrics.federationFailures.inc({ destination: destinationLabel(serverOf(userId)) });
      metrics.federationLatency.observe({ outcome }, (performance.now() - started) / 1000);
      throw e;
    }
  };
}

/**
 * With replicas (cluster/), at most `limit` fetches in flight per destination across all of them
 * (the transport caps each process alone at the same number). One process: `fetch` as is.
 */
export function perDestination(
  fetch: (userId: string) => Promise<{ snapshot: DeviceSnapshot }>,
  cluster: Cluster,
  limit: number,
): (userId: string) => Promise<{ snapshot: DeviceSnapshot }> {
  if (!cluster.shared) return fetch;
  return async (userId) => {
    const release = await cluster.slot(serverOf(userId), limit);
    try {
      return await fetch(userId);
    } finally {
      release();
    }
  };
}

/** What learns of a fresh snapshot once it is stored. */
export interface SnapshotReaders {
  overlays: { noteSnapshot(s: DeviceSnapshot): void };
  delivery: { onSnapshot(s: DeviceSnapshot): Promise<void> };
}

/**
 * The snapshot fan-out: the /keys/query overlay learns of it first, then delivery records the
 * pending changes and wakes the long-polls, so a client woken by /sync that asks /keys/query
 * at once already sees the new keys.
 */
export function fanOutSnapshot(s: DeviceSnapshot, to: SnapshotReaders): Promise<void> {
  to.overlays.noteSnapshot(s);
  return to.delivery.onSnapshot(s);
}
