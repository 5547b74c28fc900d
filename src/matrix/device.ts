// The device list of one remote user as the proxy keeps it (docs/architecture.md "Durable state").

/** A validated answer of GET /_matrix/federation/v1/user/devices/{userId}. */
export interface DeviceSnapshot {
  userId: string;
  /** The remote's `stream_id` for this device list. */
  streamId: number;
  /** device_id -> DeviceKeys JSON, including optional `unsigned.device_display_name`. */
  devices: Record<string, Record<string, unknown>>;
  /**
   * Ids of devices the remote listed whose entries failed validation (never empty when set).
   * /keys/query shows the homeserver's copy of these instead of hiding them.
   */
  invalidDevices?: string[];
  masterKey?: Record<string, unknown>;
  selfSigningKey?: Record<string, unknown>;
  /** Milliseconds since the epoch. */
  fetchedAt: number;
}

/**
 * The homeserver's view of a remote user: what it last served for them in /keys/query answers,
 * only the parts that tell a real change apart (delivery/hs-view.ts learns and compares it).
 */
export interface HsView {
  userId: string;
  /** device_id -> that device's `keys` (algorithm:device_id -> unpadded base64 public key). */
  devices: Record<string, Record<string, string>>;
  /** The master key's public keys, sorted and joined; undefined: the homeserver served none. */
  master?: string;
  selfSigning?: string;
  /** When it was learned (ms since the epoch). */
  seenAt: number;
}
