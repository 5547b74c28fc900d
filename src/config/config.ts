import { readFileSync } from "node:fs";
import * as v from "valibot";
import { parse as parseYaml } from "yaml";
import { type Command, OPTIONS, type OptionSpec } from "./options.ts";

export class ConfigError extends Error {}

// Config is the option table's type: one camelCase field per flag, typed by its schema's
// output; optional unless the option has a default or a command requires it.
type Camel<S extends string> = S extends `${infer H}-${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S;
type Option = (typeof OPTIONS)[number];
type Always = Extract<Option, { default: unknown } | { requiredFor: readonly Command[] }>;
type Maybe = Exclude<Option, Always>;
export type Config = { command: Command; args: string[] } & {
  [O in Always as Camel<O["name"]>]: v.InferOutput<O["schema"]>;
} & {
  [O in Maybe as Camel<O["name"]>]?: v.InferOutput<O["schema"]>;
};

export type CliAction = { kind: "help" } | { kind: "version" } | { kind: "run"; config: Config };

const camel = (kebab: string) => kebab.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
const envName = (kebab: string) => `RESYNC_${kebab.toUpperCase().replace(/-/g, "_")}`;
const byName = new Map<string, OptionSpec>(OPTIONS.map((o) => [o.name, o]));
const COMMANDS: readonly Command[] = ["serve", "doctor", "healthcheck", "migrate-store"];

interface Raw {
  value: unknown;
  source: string; // which flag, env var or config key said it, for the one-line error
}

/** Flags win over env, env over the config file, the file over defaults. */
export function parseCli(argv: string[], env: Record<string, string | undefined>): CliAction {
  const raw = new Map<string, Raw>();
  let command: Command = "serve";
  let configFile: Raw | undefined = env.RESYNC_CONFIG
    ? { value: env.RESYNC_CONFIG, source: "RESYNC_CONFIG" }
    : undefined;
  const flags: [string, Raw][] = [];
  const args: string[] = [];

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--help" || arg === "-h") return { kind: "help" };
    if (arg === "--version" || arg === "-V") return { kind: "version" };
    if (i === 0 && (COMMANDS as readonly string[]).includes(arg)) {
      command = arg as Command;
      continue;
    }
    if (!arg.startsWith("--")) {
      if (command !== "doctor") throw new ConfigError(`unexpected argument '${arg}': expected a --flag (see --help)`);
      args.push(arg); // doctor's server names to resolve and reach
      continue;
    }
    const eq = arg.indexOf("=");
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    if (name !== "config" && !byName.has(name)) throw new ConfigError(`unknown flag --${name} (see --help)`);
    const value = eq === -1 ? argv[++i] : arg.slice(eq + 1);
    if (value === undefined || (eq === -1 && value.startsWith("--")))
      throw new ConfigError(
        `--${name}: missing value, expected ${name === "config" ? "a YAML or JSON file path" : byName.get(name)!.expected}`,
      );
    if (name === "config") configFile = { value, source: "--config" };
    else flags.push([name, { value, source: `--${name}` }]);
  }

  if (configFile) for (const [k, r] of readConfigFile(String(configFile.value), configFile.source)) raw.set(k, r);
  for (const o of OPTIONS) {
    const e = env[envName(o.name)];
    if (e !== undefined && e !== "") raw.set(o.name, { value: e, source: envName(o.name) });
  }
  for (const [k, r] of flags) raw.set(k, r);
  return { kind: "run", config: { ...validate(command, raw), args } };
}

function readConfigFile(path: string, source: string): Map<string, Raw> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(`${source} ${path}: cannot read file (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text); // YAML is a superset of JSON, so one parser reads both
  } catch (e) {
    throw new ConfigError(`${source} ${path}: not valid YAML or JSON (${(e as Error).message.split("\n")[0]})`);
  }
  if (doc === null || doc === undefined) return new Map();
  if (typeof doc !== "object" || Array.isArray(doc))
    throw new ConfigError(`${source} ${path}: expected a mapping of option names to values`);
  const out = new Map<string, Raw>();
  for (const [key, value] of Object.entries(doc)) {
    const kebab = key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    if (!byName.has(kebab)) throw new ConfigError(`${path}: unknown key '${key}' (see --help for option names)`);
    out.set(kebab, { value, source: `key '${key}' in ${path}` });
  }
  return out;
}

// Options whose value is a secret: a bad value is described by its type, never shown, since the
// one-line error goes to stderr and from there into journals and CI logs.
const SECRET_OPTIONS: ReadonlySet<string> = new Set(["signing-key-seed"]);

function shown(name: string, value: unknown): string {
  if (SECRET_OPTIONS.has(name)) return `${typeName(value)} (value not shown: secret)`;
  if (typeof value === "string") return JSON.stringify(maskUserinfo(value));
  return JSON.stringify(value) ?? typeName(value);
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  const t = typeof value;
  return t === "object" || t === "undefined" ? `an ${t}` : `a ${t}`;
}

/** `scheme://user:pass@host…` with the userinfo masked, for text that is not a valid URL. */
const maskUserinfo = (s: string): string => s.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#@]*@/i, "$1<redacted>@");

/** The URL without its userinfo (RFC 3986 §3.2.1), untouched when it has none. */
function withoutUserinfo(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return maskUserinfo(url);
  }
  if (!u.username && !u.password) return url;
  u.username = "";
  u.password = "";
  return u.href;
}

function validate(command: Command, raw: Map<string, Raw>): Config {
  const out: Record<string, unknown> = { command };
  for (const o of OPTIONS as readonly OptionSpec[]) {
    const r = raw.get(o.name);
    if (r === undefined) {
      if (o.requiredFor?.includes(command))
        throw new ConfigError(`--${o.name} (or ${envName(o.name)}) is required: expected ${o.expected}`);
      if (o.default !== undefined) out[camel(o.name)] = o.default;
      continue;
    }
    const parsed = v.safeParse(o.schema, r.value);
    if (!parsed.success) throw new ConfigError(`${r.source}: expected ${o.expected}, got ${shown(o.name, r.value)}`);
    out[camel(o.name)] = parsed.output;
  }
  // The upstream client never sends a URL's user:password (http/upstream.ts connects by host
  // and port only), so dropping it here loses nothing and keeps it out of every log line and
  // `doctor` report that prints the URL.
  if (typeof out.upstream === "string") out.upstream = withoutUserinfo(out.upstream);
  const c = out as unknown as Config;
  if (c.retryMaxMs < c.retryInitialMs)
    throw new ConfigError(
      `--retry-max-ms: expected a value >= --retry-initial-ms (${c.retryInitialMs}), got ${c.retryMaxMs}`,
    );
  if ((command === "serve" || command === "doctor") && !c.signingKey && !(c.signingKeySeed && c.signingKeyId))
    throw new ConfigError(
      "--signing-key (or RESYNC_SIGNING_KEY) is required: expected a path to a Synapse *.signing.key or Dendrite matrix_key.pem (or --signing-key-seed with --signing-key-id)",
    );
  return c;
}

export function helpText(version: string): string {
  const rows = OPTIONS.map((o) => {
    const def =
      "default" in o && o.default !== undefined ? ` [default: ${Array.isArray(o.default) ? "none" : o.default}]` : "";
    return `  --${o.name.padEnd(28)} ${o.help}${def}\n  ${"".padEnd(30)} env ${envName(o.name)}`;
  });
  return [
    `matrix-resync-proxy ${version}: MSC2638 device-list refresh in front of any Matrix homeserver`,
    "",
    "Usage: matrix-resync-proxy [serve|doctor|healthcheck|migrate-store] [flags]",
    "",
    "  serve        run the proxy (default)",
    "  doctor [SERVER…]  check the signing key is published, the homeserver, and discovery of SERVER",
    "  healthcheck  exit 0 when the running proxy answers its health endpoint, else 1",
    "  migrate-store --from sqlite:DIR --to postgres://…  copy a store's state into PostgreSQL, counts verified",
    "",
    "Flags (each also read from env RESYNC_<NAME> and from --config FILE, YAML or JSON):",
    `  --${"config FILE".padEnd(28)} read options from a YAML/JSON file (camelCase or kebab-case keys)`,
    ...rows,
    `  --${"help".padEnd(28)} show this help`,
    `  --${"version".padEnd(28)} print the version`,
  ].join("\n");
}
