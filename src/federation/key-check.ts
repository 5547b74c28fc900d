// Start-up self-check: does the homeserver publish the key we sign with?
//
// Remote servers verify our X-Matrix signatures with the key they fetch from the homeserver's
// `GET /_matrix/key/v2/server` (server-server-api §Retrieving server keys). If the configured
// key file is not the homeserver's current key, every federation request we make fails with
// 401 on the remote, so this is worth saying loudly at start-up rather than per request.

import { verifyJsonSignature, type SigningKey } from "./signing.ts";

export type KeyCheck = { status: "published" | "mismatch" | "unknown"; detail: string; checkedUrl?: string };

export type FetchJson = (url: string, signal: AbortSignal) => Promise<{ status: number; body: unknown }>;

export interface CheckKeyOptions {
  serverName: string;
  key: SigningKey;
  /** Tried in order, e.g. `${upstream}/_matrix/key/v2/server`. */
  urls: string[];
  fetchJson?: FetchJson;
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;

export async function checkKeyPublished(opts: CheckKeyOptions): Promise<KeyCheck> {
  const fetchJson = opts.fetchJson ?? defaultFetchJson;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const reasons: string[] = [];
  for (const url of opts.urls) {
    const answer = await fetchWithTimeout(fetchJson, url, timeoutMs);
    if ("error" in answer) {
      reasons.push(`${url}: ${answer.error}`);
      continue;
    }
    const verdict = judge(answer.status, answer.body, opts.serverName, opts.key);
    if (verdict.status !== "unknown") return { ...verdict, checkedUrl: url };
    reasons.push(`${url}: ${verdict.detail}`);
  }
  return { status: "unknown", detail: reasons.length ? reasons.join("; ") : "no key URL to check" };
}

async function fetchWithTimeout(
  fetchJson: FetchJson,
  url: string,
  timeoutMs: number,
): Promise<{ status: number; body: unknown } | { error: string }> {
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  // Race as well as abort: an injected fetchJson might ignore the signal.
  const timeout = new Promise<{ error: string }>((resolve) => {
    timer = setTimeout(() => {
      controller.abort(new Error(`timed out after ${timeoutMs} ms`));
      resolve({ error: `no answer within ${timeoutMs} ms` });
    }, timeoutMs);
  });
  try {
    return await Promise.race([
      fetchJson(url, controller.signal).catch((err: unknown) => ({ error: `unreachable (${describe(err)})` })),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as { cause?: unknown }).cause;
  const causeText = cause instanceof Error ? `: ${cause.message}` : "";
  return `${err.message}${causeText}`;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The `key` of every entry of a verify_keys-shaped object that has one. */
function keysOf(v: unknown): Map<string, string> {
  const out = new Map<string, string>();
  if (!isRecord(v)) return out;
  for (const [id, entry] of Object.entries(v)) {
    if (isRecord(entry) && typeof entry.key === "string") out.set(id, entry.key);
  }
  return out;
}

/**
 * A key document is trustworthy enough to base a verdict on when it is signed under its own
 * server_name and every such signature verifies with the matching verify_keys entry (what
 * Synapse requires of a fetched key response).
 */
function selfSigned(body: Record<string, unknown>, name: string, verifyKeys: Map<string, string>): boolean {
  const sigs = isRecord(body.signatures) ? body.signatures[name] : undefined;
  if (!isRecord(sigs) || Object.keys(sigs).length === 0) return false;
  return Object.keys(sigs).every((id) => {
    const pub = verifyKeys.get(id);
    return pub !== undefined && verifyJsonSignature(body, name, id, pub);
  });
}

function judge(
  status: number,
  body: unknown,
  serverName: string,
  key: SigningKey,
): { status: KeyCheck["status"]; detail: string } {
  if (status !== 200) return { status: "unknown", detail: `answered HTTP ${status}` };
  if (!isRecord(body)) return { status: "unknown", detail: "answer is not a JSON object" };
  const name = body.server_name;
  const verifyKeys = keysOf(body.verify_keys);
  if (typeof name !== "string" || verifyKeys.size === 0) {
    return { status: "unknown", detail: "answer is not a server key document (no server_name or verify_keys)" };
  }
  const ours = `${key.keyId} (${key.publicKey})`;
  const published = verifyKeys.get(key.keyId);

  if (name === serverName && published === key.publicKey) {
    if (verifyJsonSignature(body, serverName, key.keyId, key.publicKey)) {
      return { status: "published", detail: `homeserver publishes our key ${ours}` };
    }
    return { status: "unknown", detail: `lists our key ${ours} but carries no valid signature by it` };
  }
  if (!selfSigned(body, name, verifyKeys)) {
    return { status: "unknown", detail: "answer's signatures do not verify with its own verify_keys" };
  }
  const listing = [...verifyKeys].map(([id, pub]) => `${id} (${pub})`).join(", ");
  if (name !== serverName) {
    return {
      status: "mismatch",
      detail: `homeserver says its server_name is ${JSON.stringify(name)}, not ${JSON.stringify(serverName)}; it publishes ${listing}`,
    };
  }
  const old = keysOf(body.old_verify_keys).get(key.keyId);
  const why =
    old === key.publicKey
      ? `our key ${ours} is only listed in old_verify_keys (expired)`
      : published !== undefined
        ? `key id ${key.keyId} is published with a different public key (${published}), ours is ${key.publicKey}`
        : `our key ${ours} is not published`;
  return { status: "mismatch", detail: `${why}; the homeserver publishes ${listing}` };
}

/** Plain global fetch to the homeserver; a body that is not JSON is reported as `undefined`. */
async function defaultFetchJson(url: string, signal: AbortSignal): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url, { signal, headers: { accept: "application/json" } });
  const text = await res.text();
  try {
    return { status: res.status, body: JSON.parse(text) as unknown };
  } catch {
    return { status: res.status, body: undefined };
  }
}
