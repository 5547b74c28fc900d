// Synapse configuration for a loopback-only federation of two homeservers.
// Option names checked against matrix-synapse 1.163.2 (synapse/config/*.py): the IP
// blocklists are still spelled `ip_range_blacklist` / `federation_ip_range_blacklist`
// in YAML even though the code calls them blocklists.
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { stringify } from "yaml";
import type { HomeserverSlot, SlotPaths } from "./layout.ts";
import type { TlsFiles } from "./tls.ts";

export type ConfigObject = Record<string, unknown>;

// Generous enough that a test suite never meets M_LIMIT_EXCEEDED, which would make the
// e2e tests flaky rather than wrong.
const relaxed = { per_second: 1000, burst_count: 1000 };

export function synapseConfig(slot: HomeserverSlot, paths: SlotPaths, tls: TlsFiles): ConfigObject {
  return {
    server_name: slot.serverName,
    pid_file: paths.pidPath,
    public_baseurl: `https://${slot.serverName}/`,
    report_stats: false,
    suppress_key_server_warning: true,
    // No notary: each server fetches the other's key directly from its TLS listener.
    trusted_key_servers: [],
    signing_key_path: paths.signingKeyPath,
    tls_certificate_path: tls.certPath,
    tls_private_key_path: tls.keyPath,
    // Verify federation TLS against the harness CA rather than turning verification off,
    // so the harness exercises the same certificate checks as production.
    federation_custom_ca_list: [tls.caPath],
    // Both servers live on 127.0.0.1, which the default blocklists refuse.
    ip_range_blacklist: [],
    federation_ip_range_blacklist: [],
    listeners: [
      {
        port: slot.tlsPort,
        bind_addresses: ["127.0.0.1"],
        type: "http",
        tls: true,
        x_forwarded: false,
        resources: [{ names: ["client", "federation"], compress: false }],
      },
      {
        // The proxy's upstream. `keys` serves /_matrix/key/v2/server here too, so a proxy
        // can check at start-up that the homeserver publishes the key it signs with.
        port: slot.clientPort,
        bind_addresses: ["127.0.0.1"],
        type: "http",
        tls: false,
        x_forwarded: true,
        resources: [{ names: ["client", "keys"], compress: false }],
      },
    ],
    database: { name: "sqlite3", args: { database: paths.dbPath } },
    media_store_path: paths.mediaDir,
    enable_registration: true,
    enable_registration_without_verification: true,
    registration_shared_secret: randomBytes(24).toString("hex"),
    macaroon_secret_key: randomBytes(24).toString("hex"),
    form_secret: randomBytes(24).toString("hex"),
    // Device display names are part of the federation device list answer (spec
    // user_devices.yaml `device_display_name`); Synapse omits them unless allowed.
    allow_device_name_lookup_over_federation: true,
    // Presence is unrelated to device lists and only adds federation chatter.
    presence: { enabled: false },
    rc_message: relaxed,
    rc_registration: relaxed,
    rc_login: { address: relaxed, account: relaxed, failed_attempts: relaxed },
    rc_joins: { local: relaxed, remote: relaxed },
    rc_joins_per_room: relaxed,
    rc_invites: { per_room: relaxed, per_user: relaxed, per_issuer: relaxed },
    rc_room_creation: relaxed,
    rc_key_requests: relaxed,
    rc_3pid_validation: relaxed,
    rc_admin_redaction: relaxed,
    rc_presence: { per_user: relaxed },
    rc_delayed_event_mgmt: relaxed,
    rc_federation: { window_size: 1000, sleep_limit: 1000, sleep_delay: 0, reject_limit: 1000, concurrent: 10 },
  };
}

function isPlainObject(value: unknown): value is ConfigObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Overrides win; nested plain objects merge key by key, arrays and scalars replace. */
export function mergeConfig(base: ConfigObject, overrides: ConfigObject): ConfigObject {
  const out: ConfigObject = { ...base };
  for (const [key, value] of Object.entries(overrides)) {
    const prev = out[key];
    out[key] = isPlainObject(prev) && isPlainObject(value) ? mergeConfig(prev, value) : value;
  }
  return out;
}

export async function writeConfig(path: string, config: ConfigObject): Promise<void> {
  await writeFile(path, `# Written by scripts/homeservers.ts; regenerated on every start.\n${stringify(config)}`);
}

/**
 * Synapse's key file format (signedjson.key.read_signing_keys): one key per line,
 * `ed25519 <version> <unpadded standard base64 of the 32-byte seed>`; the first line
 * signs. We write it ourselves so a proxy can sign with the key this server publishes.
 */
export async function writeSigningKey(path: string, version: string): Promise<void> {
  const seed = randomBytes(32).toString("base64").replace(/=+$/, "");
  await writeFile(path, `ed25519 ${version} ${seed}\n`, { mode: 0o600 });
}
