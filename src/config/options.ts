import * as v from "valibot";

// The command-line contract (docs/architecture.md "Command-line contract"). Flag names are fixed: external acceptance tests drive them.
// Every flag also reads env RESYNC_<NAME> and the same key (camelCase or kebab-case) in --config FILE.

const int = (min: number, max = Number.MAX_SAFE_INTEGER) =>
  v.pipe(
    v.union([v.number(), v.pipe(v.string(), v.regex(/^\d+$/), v.transform(Number))]),
    v.integer(),
    v.minValue(min),
    v.maxValue(max),
  );
const rate = v.pipe(
  v.union([v.number(), v.pipe(v.string(), v.regex(/^\d+(\.\d+)?$/), v.transform(Number))]),
  v.minValue(0.001),
  v.maxValue(1000),
);
const text = v.pipe(v.string(), v.trim(), v.nonEmpty());
const url = v.pipe(text, v.url(), v.regex(/^https?:\/\//i));
const listenAddr = v.pipe(text, v.regex(/^(unix:\/.+|(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5})$/));
const serverName = v.pipe(text, v.regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/));
// sqlite: is the file under --data-dir; sqlite:DIR names another directory (migrate-store's source).
const database = v.pipe(text, v.regex(/^(sqlite:.*|postgres(ql)?:\/\/.+)$/i));
const DATABASE_EXPECTED = "sqlite: (the file under --data-dir), sqlite:DIR, or postgres://user:password@host:port/db";
const list = v.pipe(
  v.union([
    v.array(v.string()),
    v.pipe(
      v.string(),
      v.transform((s) => s.split(",")),
    ),
  ]),
  v.transform((a) => a.map((s) => s.trim()).filter(Boolean)),
);

export type Command = "serve" | "doctor" | "healthcheck" | "migrate-store";

export interface OptionSpec {
  name: string; // kebab-case flag name
  schema: v.GenericSchema<unknown, unknown>;
  expected: string; // said in the one-line error
  help: string;
  default?: unknown;
  requiredFor?: Command[];
}

export const OPTIONS = [
  {
    name: "upstream",
    schema: url,
    expected: "an http(s) URL of the homeserver's client API",
    help: "homeserver client API base URL",
    requiredFor: ["serve", "doctor"],
  },
  {
    name: "server-name",
    schema: serverName,
    expected: "a server name such as example.org or example.org:8448",
    help: "the homeserver's server_name",
    requiredFor: ["serve", "doctor"],
  },
  {
    name: "signing-key",
    schema: text,
    expected: "a path to a Synapse *.signing.key or Dendrite matrix_key.pem",
    help: "the homeserver's signing key file (or use --signing-key-seed + --signing-key-id)",
  },
  {
    name: "signing-key-seed",
    schema: text,
    expected: "an unpadded base64 32-byte ed25519 seed",
    help: "raw signing key seed, for Conduit/conduwuit (which keep it in their database)",
  },
  {
    name: "signing-key-id",
    schema: v.pipe(text, v.regex(/^ed25519:[A-Za-z0-9_]+$/)),
    expected: "a key id such as ed25519:abc",
    help: "key id for --signing-key-seed",
  },
  {
    name: "listen",
    schema: listenAddr,
    expected: "host:port or unix:/path",
    help: "client-facing listener",
    default: "0.0.0.0:8009",
  },
  {
    name: "data-dir",
    schema: text,
    expected: "a directory path",
    help: "durable state (SQLite file inside)",
    default: "./data",
  },
  {
    name: "database",
    schema: database,
    expected: DATABASE_EXPECTED,
    help: "where durable state lives: SQLite under --data-dir, or PostgreSQL shared by replicas",
    default: "sqlite:",
  },
  {
    name: "database-timeout-ms",
    schema: int(50, 60_000),
    expected: "an integer from 50 to 60000",
    help: "PostgreSQL: a store call not answered within this fails over to plain pass-through",
    default: 2000,
  },
  {
    name: "retry-lease-ms",
    schema: int(1000, 3_600_000),
    expected: "an integer from 1000 to 3600000",
    help: "a due retry is claimed for this long: another replica takes it over after that",
    default: 60_000,
  },
  {
    name: "from",
    schema: database,
    expected: DATABASE_EXPECTED,
    help: "migrate-store: the store to copy from (sqlite:DIR)",
    requiredFor: ["migrate-store"],
  },
  {
    name: "to",
    schema: database,
    expected: DATABASE_EXPECTED,
    help: "migrate-store: the store to copy into (postgres://…)",
    requiredFor: ["migrate-store"],
  },
  {
    name: "existing-target",
    schema: v.picklist(["refuse", "replace"]),
    expected: "refuse or replace",
    help: "migrate-store: a target that already holds state is refused, or emptied and replaced",
    default: "refuse",
  },
  {
    name: "metrics-listen",
    schema: listenAddr,
    expected: "host:port or unix:/path",
    help: "/metrics, /healthz, /readyz listener (off when unset)",
  },
  {
    name: "federation-ca",
    schema: text,
    expected: "a path to a PEM file",
    help: "extra PEM CA(s) trusted for federation TLS (system CAs are always trusted)",
  },
  {
    name: "federation-allow-cidrs",
    schema: list,
    expected: "a comma-separated list of CIDRs",
    help: "CIDRs exempt from the private-address block",
    default: [],
  },
  {
    name: "dns-server",
    schema: v.pipe(text, v.regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/)),
    expected: "host:port",
    help: "resolver for A/AAAA/SRV in federation discovery (system when unset)",
  },
  {
    name: "trusted-proxies",
    schema: list,
    expected: "'loopback' or a comma-separated list of CIDRs",
    help: "peers whose X-Forwarded-For is trusted",
    default: [],
  },
  {
    name: "refresh-wait-ms",
    schema: int(0, 60_000),
    expected: "an integer from 0 to 60000",
    help: "how long a refresh request waits for the federation answer",
    default: 5000,
  },
  {
    name: "refresh-cache-ms",
    schema: int(0),
    expected: "a non-negative integer",
    help: "a refresh this soon after a success skips federation",
    default: 30_000,
  },
  {
    name: "retry-initial-ms",
    schema: int(1),
    expected: "a positive integer",
    help: "first retry delay for a failed refresh",
    default: 30_000,
  },
  {
    name: "retry-max-ms",
    schema: int(1),
    expected: "a positive integer",
    help: "largest retry delay for a failed refresh",
    default: 3_600_000,
  },
  {
    name: "upstream-header-timeout-ms",
    schema: int(1),
    expected: "a positive integer",
    help: "how long to wait for the homeserver's response headers (long-polls get their own timeout added)",
    default: 60_000,
  },
  {
    name: "rate-user-burst",
    schema: int(1),
    expected: "a positive integer",
    help: "refreshes one user may make in a burst",
    default: 10,
  },
  {
    name: "rate-user-per-minute",
    schema: int(1),
    expected: "a positive integer",
    help: "refreshes one user regains per minute",
    default: 10,
  },
  {
    name: "rate-target-burst",
    schema: int(1),
    expected: "a positive integer",
    help: "federation fetches of one target user in a burst (all requesters)",
    default: 3,
  },
  {
    name: "rate-target-per-minute",
    schema: int(1),
    expected: "a positive integer",
    help: "federation fetches of one target user regained per minute",
    default: 6,
  },
  {
    name: "retry-max-attempts",
    schema: int(1, 100),
    expected: "an integer from 1 to 100",
    help: "background retries of a failed refresh before giving up",
    default: 10,
  },
  {
    name: "probe-interval-ms",
    schema: int(0),
    expected: "a non-negative integer",
    help: "an explicit refresh may probe a backed-off destination this often",
    default: 60_000,
  },
  {
    name: "federation-timeout-ms",
    schema: int(100, 300_000),
    expected: "an integer from 100 to 300000",
    help: "total time for one federation request (discovery included)",
    default: 15_000,
  },
  {
    name: "tracker-ttl-ms",
    schema: int(1),
    expected: "a positive integer",
    help: "how long a device that queried a user's keys keeps hearing of refreshes",
    default: 7 * 86_400_000,
  },
  {
    name: "snapshot-max-age-ms",
    schema: int(1),
    expected: "a positive integer",
    help: "an overlay snapshot older than this is re-fetched before it is served again",
    default: 3_600_000,
  },
  {
    name: "body-timeout-ms",
    schema: int(100, 600_000),
    expected: "an integer from 100 to 600000",
    help: "a request body the proxy reads itself (POST /keys/query) must arrive within this, else 408; pass-through bodies have no limit of ours",
    default: 30_000,
  },
  {
    name: "body-min-bytes-per-second",
    schema: int(0),
    expected: "a non-negative integer",
    help: "such a body must also keep up this average rate (checked each second), else 408; 0: no minimum",
    default: 4096,
  },
  {
    name: "max-tracked-per-query",
    schema: int(0, 1_000_000),
    expected: "an integer from 0 to 1000000",
    help: "remote users of one /keys/query whose refreshes the querying device hears of (the rest are answered, not tracked)",
    default: 1000,
  },
  {
    name: "max-trackers-per-device",
    schema: int(0, 10_000_000),
    expected: "an integer from 0 to 10000000",
    help: "remote users one device can be tracking at once",
    default: 20_000,
  },
  {
    name: "shutdown-timeout-ms",
    schema: int(0, 3_600_000),
    expected: "an integer from 0 to 3600000",
    help: "on SIGTERM, how long requests in flight (long-polls too) may take to finish before they are cut",
    default: 25_000,
  },
  {
    name: "engine",
    schema: v.picklist(["auto", "bun", "node"]),
    expected: "one of auto, bun, node",
    help: "client listener: 'bun' parses HTTP/1.1 itself and relays bytes (fastest; Bun only), 'node' is node:http (Deno always uses it), 'auto' picks bun under Bun",
    default: "auto",
  },
  {
    name: "front-threads",
    schema: int(1, 64),
    expected: "an integer from 1 to 64",
    help: "engine bun on a TCP --listen: front-end threads sharing the port (more cores for pass-through)",
    default: 1,
  },
  {
    name: "detect",
    schema: v.picklist(["on", "off"]),
    expected: "on or off",
    help: "raise suspicions from /sync to-device events and /keys/query answers, and run the audit",
    default: "on",
  },
  {
    name: "audit-interval-ms",
    schema: int(0),
    expected: "a non-negative integer (0 = off)",
    help: "re-verify every tracked remote user this often (0 = off)",
    default: 6 * 3_600_000,
  },
  {
    name: "audit-max-per-second",
    schema: rate,
    expected: "a number from 0.001 to 1000",
    help: "global budget of audit fetches per second",
    default: 2,
  },
  {
    name: "log-level",
    schema: v.picklist(["debug", "info", "warn", "error"]),
    expected: "one of debug, info, warn, error",
    help: "log verbosity",
    default: "info",
  },
] as const satisfies readonly OptionSpec[];
