// A/AAAA/SRV lookups for server discovery (server-server-api §Resolving server names).
// node:dns/promises `Resolver` with `setServers(["host:port"])` honours the port on Bun and
// Deno (proved by test/integration/discovery.test.ts against a UDP server on an ephemeral
// port), so no hand-written DNS client is needed. Runtime quirk: Deno reports SERVFAIL as
// ENOTFOUND, so there a failing zone reads as "no records" and discovery falls through.
import { lookup, Resolver as DnsResolver } from "node:dns/promises";
import { FederationError } from "./errors.ts";

export interface SrvRecord {
  name: string;
  port: number;
  priority: number;
  weight: number;
}

export interface Resolver {
  /** A and AAAA records (IPv4 first); [] when the name does not exist or has no data. */
  addresses(host: string): Promise<string[]>;
  /** SRV records as returned (unsorted); [] when the name does not exist or has no data. */
  srv(name: string): Promise<SrvRecord[]>;
}

// Answers that mean "nothing here" rather than "the lookup failed".
const EMPTY_CODES = new Set(["ENOTFOUND", "ENODATA", "ENONAME", "EAI_NONAME", "EAI_NODATA"]);

function codeOf(e: unknown): string {
  return typeof e === "object" && e !== null && "code" in e ? String((e as { code: unknown }).code) : "";
}

/** Validate "host:port" / "[v6]:port" (what setServers accepts) and give it back. */
function checkServer(spec: string): string {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3}))(?::(\d{1,5}))?$/.exec(spec);
  const port = m?.[3] === undefined ? 53 : Number(m[3]);
  if (!m || port < 1 || port > 65535) {
    throw new Error(`invalid DNS server "${spec}": expected IPv4:port or [IPv6]:port`);
  }
  return spec;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new FederationError("transport", `DNS lookup ${what} timed out after ${ms} ms`)),
      ms,
    );
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function orEmpty<T>(p: Promise<T[]>, what: string): Promise<T[]> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof FederationError) throw e;
    if (EMPTY_CODES.has(codeOf(e))) return [];
    const msg = e instanceof Error ? e.message : String(e);
    throw new FederationError("transport", `DNS lookup ${what} failed: ${codeOf(e) || msg}`, undefined, { cause: e });
  }
}

export function createResolver(opts: { dnsServer?: string; timeoutMs?: number }): Resolver {
  const timeoutMs = opts.timeoutMs ?? 5000;
  // The runtime resolver's own timeout is per try; ours bounds the whole lookup.
  const dns = new DnsResolver({ timeout: Math.max(100, Math.floor(timeoutMs / 2)), tries: 2 });
  if (opts.dnsServer !== undefined) dns.setServers([checkServer(opts.dnsServer)]);

  async function addresses(host: string): Promise<string[]> {
    if (opts.dnsServer === undefined) {
      // System mode: getaddrinfo, so /etc/hosts and nsswitch apply as they would for curl.
      const found = await orEmpty(withTimeout(lookup(host, { all: true }), timeoutMs, host), host);
      const sorted = [...found].sort((a, b) => a.family - b.family);
      return [...new Set(sorted.map((a) => a.address))];
    }
    // Both families are asked; one failing while the other answers still gives addresses.
    const [v4, v6] = await Promise.allSettled([
      orEmpty(withTimeout(dns.resolve4(host), timeoutMs, `A ${host}`), `A ${host}`),
      orEmpty(withTimeout(dns.resolve6(host), timeoutMs, `AAAA ${host}`), `AAAA ${host}`),
    ]);
    if (v4.status === "rejected" && v6.status === "rejected") throw v4.reason;
    return [...(v4.status === "fulfilled" ? v4.value : []), ...(v6.status === "fulfilled" ? v6.value : [])];
  }

  async function srv(name: string): Promise<SrvRecord[]> {
    const records = await orEmpty(withTimeout(dns.resolveSrv(name), timeoutMs, `SRV ${name}`), `SRV ${name}`);
    return records.map((r) => ({ name: r.name, port: r.port, priority: r.priority, weight: r.weight }));
  }

  return { addresses, srv };
}

/**
 * Order SRV records as RFC 2782 asks: ascending priority; within one priority a weighted
 * random draw without replacement (zero-weight records go last, shuffled), as Synapse's
 * srv_resolver._sort_server_list does.
 */
export function sortSrv(records: readonly SrvRecord[], random: () => number = Math.random): SrvRecord[] {
  const byPriority = new Map<number, SrvRecord[]>();
  for (const r of records) byPriority.set(r.priority, [...(byPriority.get(r.priority) ?? []), r]);
  const out: SrvRecord[] = [];
  for (const priority of [...byPriority.keys()].sort((a, b) => a - b)) {
    const pool = [...(byPriority.get(priority) ?? [])];
    let total = pool.reduce((s, r) => s + r.weight, 0);
    while (pool.length > 0 && total > 0) {
      let target = 1 + Math.floor(random() * total);
      const idx = pool.findIndex((r) => (target -= r.weight) <= 0);
      const [picked] = pool.splice(idx, 1);
      out.push(picked!);
      total -= picked!.weight;
    }
    for (let i = pool.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [pool[i], pool[j]] = [pool[j]!, pool[i]!];
    }
    out.push(...pool);
  }
  return out;
}
