// Structured JSON lines on stderr. Secrets never reach a log line: see redact().

export type Level = "debug" | "info" | "warn" | "error";
const RANK: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** Would a line at `lvl` be written? Lets hot paths skip building fields (absent: yes). */
  writes?(lvl: Level): boolean;
}

const R = "<redacted>";

// Secrets that can hide inside any string we log (a URL, an error message, a header value):
// access tokens (client-server API §Using access tokens: header or `access_token` query, and
// the /login and /refresh bodies), X-Matrix signatures (server-server API §Request
// Authentication; the value may be quoted or not), Synapse key-file lines ("ed25519 <version>
// <seed>") and PEM private keys (Dendrite's matrix_key.pem).
const SECRET_PATTERNS: [RegExp, string][] = [
  [/((?:access_token|refresh_token)=)[^&\s"',;]+/gi, `$1${R}`],
  [/("(?:access_token|refresh_token)"\s*:\s*")[^"]*"/gi, `$1${R}"`],
  [/(Bearer\s+)[^\s",;]+/gi, `$1${R}`],
  [/(\bsig=)(?:"[^"]*"|[^\s,"]+)/gi, `$1"${R}"`],
  [/(\bed25519[ :][A-Za-z0-9_]+ )[A-Za-z0-9+/]{42,44}={0,2}/g, `$1${R}`],
  [/-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)/g, `${R} private key`],
];
// Field names whose whole value is secret, whatever its shape: tokens, passwords, key seeds and
// private keys, and JSON signatures (the `signatures` object of device keys and events).
const SECRET_KEYS =
  /^(authorization|proxy-authorization|cookie|set-cookie|x-matrix|(access|refresh)_?token|token|password|(signing_?key_?)?seed|private_?key|signatures?|sig)$/i;
const MAX_DEPTH = 8;

/** A copy of `value` safe to log: secret-named fields replaced, secret patterns masked in strings. */
export function redact(value: unknown, depth = 0): unknown {
  if (typeof value === "string") return SECRET_PATTERNS.reduce((s, [re, to]) => s.replace(re, to), value);
  if (typeof value === "bigint") return String(value);
  if (value === null || typeof value !== "object") return value;
  if (depth >= MAX_DEPTH) return "<too deep>"; // also ends cycles
  // An Error has no enumerable fields worth keeping: its message (redacted) is what helps.
  if (value instanceof Error) return redact(value.message, depth + 1);
  if (ArrayBuffer.isView(value)) return `<${value.byteLength} bytes>`; // bytes may be a seed or a body
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEYS.test(k) ? R : redact(v, depth + 1);
  return out;
}

export function createLogger(level: Level, write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const min = RANK[level];
  const emit =
    (lvl: Level) =>
    (msg: string, fields: Record<string, unknown> = {}) => {
      if (RANK[lvl] < min) return;
      let line: string;
      try {
        line = JSON.stringify({
          time: new Date().toISOString(),
          level: lvl,
          msg: redact(msg),
          ...(redact(fields) as object),
        });
      } catch (e) {
        // Logging must never take a request down with it.
        line = JSON.stringify({ time: new Date().toISOString(), level: lvl, msg: redact(msg), log_error: String(e) });
      }
      write(`${line}\n`);
    };
  return {
    debug: emit("debug"),
    info: emit("info"),
    warn: emit("warn"),
    error: emit("error"),
    writes: (lvl) => RANK[lvl] >= min,
  };
}

/** Is a line at `lvl` written by a logger at `level`? Lets hot paths skip building fields. */
export function enabled(level: Level, lvl: Level): boolean {
  return RANK[lvl] >= RANK[level];
}
