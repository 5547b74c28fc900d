// Step 3 of server discovery: GET https://<hostname>/.well-known/matrix/server
// (server-server-api §Resolving server names). Cache periods, the 50 KiB body cap and the
// "temporary failure keeps the previous answer" rule follow Synapse's well_known_resolver.py.
import { isIP } from "node:net";
import type { Resolver } from "./dns.ts";
import { FederationError } from "./errors.ts";
import { httpsRequest, type HttpsResponse } from "./https.ts";
import { type Cidr, isBlockedAddress } from "./ip-guard.ts";

const DEFAULT_PERIOD_S = 24 * 3600;
const JITTER = 0.1; // ±10 %, so a restart does not refetch every domain in the same minute
const MIN_PERIOD_S = 5 * 60;
const MAX_PERIOD_S = 48 * 3600;
const INVALID_PERIOD_S = 3600; // errors are cached up to 1 h...
const DOWN_PERIOD_S = 2 * 60; // ...or 2 min when the domain recently had a valid answer
const REMEMBER_VALID_S = 2 * 3600;
const GRACE_FACTOR = 0.2; // refetch in the last 20 % of the TTL
const MAX_BODY = 50 * 1024;
const MAX_REDIRECTS = 5;
const MAX_ENTRIES = 10_000;

export interface WellKnownLookup {
  /** The validated "m.server" value, or null: go on with SRV (step 4). */
  server: string | null;
  steps: string[];
}

export interface WellKnownOptions {
  resolver: Resolver;
  allowCidrs: readonly Cidr[];
  ca?: string[];
  /** Port for https URLs without one (443; tests use an ephemeral port). */
  port: number;
  timeoutMs: number;
  now: () => number;
  /** Accepts a syntactically valid "m.server" value (discovery's server-name grammar). */
  isValidServerName: (value: string) => boolean;
  random?: () => number;
}

interface CacheEntry {
  server: string | null;
  expiresAt: number;
  ttlMs: number;
}
class FetchFailure extends Error {
  readonly temporary: boolean;
  constructor(message: string, temporary: boolean) {
    super(message);
    this.temporary = temporary;
  }
}

export function createWellKnownResolver(opts: WellKnownOptions): { get(hostname: string): Promise<WellKnownLookup> } {
  const cache = new Map<string, CacheEntry>();
  const hadValid = new Map<string, number>(); // hostname -> until (ms)
  const inflight = new Map<string, Promise<WellKnownLookup>>();
  const random = opts.random ?? Math.random;
  const jitter = (s: number): number => s * (1 - JITTER + 2 * JITTER * random());

  function remember<V>(map: Map<string, V>, key: string, value: V): void {
    map.delete(key);
    map.set(key, value);
    if (map.size > MAX_ENTRIES) map.delete(map.keys().next().value!);
  }

  async function lookup(host: string): Promise<WellKnownLookup> {
    const steps: string[] = [];
    const now = opts.now();
    const prev = cache.get(host);
    const prevLive = prev && now < prev.expiresAt ? prev : undefined;
    if (prevLive && now < prevLive.expiresAt - GRACE_FACTOR * prevLive.ttlMs) {
      const left = Math.round((prevLive.expiresAt - now) / 1000);
      steps.push(
        `3. .well-known for ${host}: cached ${prevLive.server === null ? "absence" : `m.server "${prevLive.server}"`} (${left} s left)`,
      );
      return { server: prevLive.server, steps };
    }
    let server: string | null;
    let periodS: number;
    try {
      const got = await fetchWellKnown(host, steps);
      server = got.server;
      periodS =
        got.periodS === null ? jitter(DEFAULT_PERIOD_S) : Math.min(MAX_PERIOD_S, Math.max(MIN_PERIOD_S, got.periodS));
      remember(hadValid, host, opts.now() + (periodS + REMEMBER_VALID_S) * 1000);
      steps.push(`3. .well-known for ${host}: m.server "${server}", cached ${Math.round(periodS)} s`);
    } catch (e) {
      const f = e instanceof FetchFailure ? e : new FetchFailure(String(e), true);
      if (f.temporary && prevLive?.server) {
        steps.push(
          `3. .well-known for ${host} failed (${f.message}); keeping the cached m.server "${prevLive.server}"`,
        );
        return { server: prevLive.server, steps };
      }
      server = null;
      const recent = (hadValid.get(host) ?? 0) > opts.now();
      periodS = jitter(recent ? DOWN_PERIOD_S : INVALID_PERIOD_S);
      steps.push(
        `3. .well-known for ${host} unusable (${f.message}); cached ${Math.round(periodS)} s, going on with SRV`,
      );
    }
    remember(cache, host, { server, expiresAt: opts.now() + periodS * 1000, ttlMs: periodS * 1000 });
    return { server, steps };
  }

  async function fetchWellKnown(host: string, steps: string[]): Promise<{ server: string; periodS: number | null }> {
    const deadline = opts.now() + opts.timeoutMs;
    const seen = new Set<string>();
    let url = new URL(`https://${host.includes(":") ? `[${host}]` : host}/.well-known/matrix/server`);
    let res: HttpsResponse;
    for (let hop = 0; ; hop++) {
      if (seen.has(url.href)) throw new FetchFailure(`redirect loop at ${url.href}`, true);
      if (hop > MAX_REDIRECTS) throw new FetchFailure(`more than ${MAX_REDIRECTS} redirects`, true);
      seen.add(url.href);
      res = await getOnce(url, deadline, steps);
      const location = res.headers.location;
      if (res.status >= 300 && res.status < 400 && typeof location === "string") {
        const next = new URL(location, url);
        steps.push(`   ${res.status} redirect to ${next.href}`);
        if (next.protocol !== "https:") throw new FetchFailure(`redirect to non-https ${next.href}`, false);
        url = next;
        continue;
      }
      break;
    }
    if (res.status >= 500) throw new FetchFailure(`HTTP ${res.status}`, true);
    if (res.status !== 200) throw new FetchFailure(`HTTP ${res.status}`, false);
    let parsed: unknown;
    try {
      parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(res.body));
    } catch {
      throw new FetchFailure("body is not JSON", false);
    }
    const value =
      typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)
        ? (parsed as Record<string, unknown>)["m.server"]
        : undefined;
    if (typeof value !== "string") throw new FetchFailure(`no string "m.server" in the body`, false);
    if (!opts.isValidServerName(value))
      throw new FetchFailure(`"m.server" is not a valid server name: ${JSON.stringify(value)}`, false);
    return { server: value, periodS: cachePeriodSeconds(res.headers, opts.now()) };
  }

  async function getOnce(url: URL, deadline: number, steps: string[]): Promise<HttpsResponse> {
    const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
    const literal = isIP(hostname) !== 0;
    let addresses: string[];
    try {
      addresses = literal ? [hostname] : await opts.resolver.addresses(hostname);
    } catch (e) {
      throw new FetchFailure(e instanceof Error ? e.message : String(e), true);
    }
    const allowed = addresses.filter((a) => !isBlockedAddress(a, opts.allowCidrs));
    if (addresses.length === 0) throw new FetchFailure(`${hostname} has no A/AAAA records`, true);
    if (allowed.length === 0)
      throw new FetchFailure(`all addresses of ${hostname} are private (${addresses.join(", ")}), not fetched`, true);
    const port = url.port === "" ? opts.port : Number(url.port);
    let first: unknown;
    for (const address of allowed) {
      const remaining = deadline - opts.now();
      if (remaining <= 0) break;
      steps.push(`   GET ${url.href} via ${address.includes(":") ? `[${address}]` : address}:${port}`);
      try {
        return await httpsRequest({
          address,
          port,
          tlsServerName: literal ? null : hostname,
          hostHeader: url.host,
          method: "GET",
          path: url.pathname + url.search,
          headers: { "user-agent": "matrix-resync-proxy" },
          ca: opts.ca,
          timeoutMs: remaining,
          maxBytes: MAX_BODY,
        });
      } catch (e) {
        first ??= e;
        // Synapse treats an oversized body as a temporary failure and stops there.
        if (e instanceof FederationError && e.kind !== "transport") break;
      }
    }
    throw new FetchFailure(first instanceof Error ? first.message : `timed out fetching ${url.href}`, true);
  }

  return {
    get(hostname: string): Promise<WellKnownLookup> {
      const host = hostname.toLowerCase();
      // Concurrent resolutions of one name share a single fetch.
      let p = inflight.get(host);
      if (!p) {
        p = lookup(host).finally(() => inflight.delete(host));
        inflight.set(host, p);
      }
      return p.then((r) => ({ server: r.server, steps: [...r.steps] }));
    },
  };
}

// HTTP-date (RFC 9110 §5.6.7): IMF-fixdate, obsolete RFC 850 and asctime forms. Checked
// first because Date.parse is lenient ("0" parses as the year 2000).
const HTTP_DATE = new RegExp(
  [
    /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/.source,
    /^[A-Z][a-z]+, \d{2}-[A-Z][a-z]{2}-\d{2} \d{2}:\d{2}:\d{2} GMT$/.source,
    /^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}$/.source,
  ].join("|"),
);

/**
 * Seconds to cache a successful answer as its headers ask, or null when they say nothing
 * (Synapse _cache_period_from_headers): no-store -> 0, then max-age, then Expires; an
 * unparsable Expires counts as already expired (RFC 9111 §5.3).
 */
export function cachePeriodSeconds(
  headers: Record<string, string | string[] | undefined>,
  nowMs: number,
): number | null {
  const cc = headers["cache-control"];
  const directives = new Map<string, string | undefined>();
  for (const line of Array.isArray(cc) ? cc : cc === undefined ? [] : [cc]) {
    for (const d of line.split(",")) {
      const [k, v] = d.split("=", 2).map((x) => x.trim());
      if (k) directives.set(k.toLowerCase(), v?.replace(/^"(.*)"$/, "$1"));
    }
  }
  if (directives.has("no-store")) return 0;
  const maxAge = directives.get("max-age");
  if (maxAge !== undefined && /^\d+$/.test(maxAge)) return Number(maxAge);
  const expires = headers.expires;
  const last = Array.isArray(expires) ? expires[expires.length - 1] : expires;
  if (last !== undefined) {
    const text = last.trim();
    // asctime dates carry no zone but are GMT; Date.parse would read them as local time.
    const at = HTTP_DATE.test(text) ? Date.parse(text.endsWith("GMT") ? text : `${text} GMT`) : Number.NaN;
    return Number.isNaN(at) ? 0 : (at - nowMs) / 1000;
  }
  return null;
}
