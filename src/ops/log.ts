// Structured JSON lines on stderr. Secrets never reach a log line: see redact().

export type Level = "debug" | "info" | "warn" | "error";
const RANK: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

// Access tokens (query or header), X-Matrix signatures and key seeds.
const SECRET_PATTERNS: [RegExp, string][] = [
  [/(access_token=)[^&\s"]+/gi, "$1<redacted>"],
  [/(Bearer\s+)[^\s",]+/gi, "$1<redacted>"],
  [/(sig=")[^"]*"/gi, '$1<redacted>"'],
];
const SECRET_KEYS = /^(authorization|access_token|accesstoken|password|seed|signing_?key_?seed|signature|sig)$/i;

export function redact(value: unknown): unknown {
  if (typeof value === "string") return SECRET_PATTERNS.reduce((s, [re, to]) => s.replace(re, to), value);
  if (Array.isArray(value)) return value.map(redact);
  if (value && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEYS.test(k) ? "<redacted>" : redact(v);
    return out;
  }
  return value;
}

export function createLogger(level: Level, write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const min = RANK[level];
  const emit = (lvl: Level) => (msg: string, fields: Record<string, unknown> = {}) => {
    if (RANK[lvl] < min) return;
    write(`${JSON.stringify({ time: new Date().toISOString(), level: lvl, msg: redact(msg), ...(redact(fields) as object) })}\n`);
  };
  return { debug: emit("debug"), info: emit("info"), warn: emit("warn"), error: emit("error") };
}
