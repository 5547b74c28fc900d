// Server discovery: server name -> addresses, Host header and TLS name
// (server-server-api §Resolving server names, steps 1-6; docs/architecture.md "Federation").
// Every resolved address passes the private-address guard before anything connects to it.
import { isIP } from "node:net";
import { type Resolver, sortSrv } from "./dns.ts";
import { FederationError } from "./errors.ts";
import { type Cidr, isBlockedAddress } from "./ip-guard.ts";
import { createWellKnownResolver } from "./well-known.ts";

export interface ResolvedServer {
  serverName: string;
  hostHeader: string;
  tlsServerName: string | null;
  targets: { address: string; port: number }[];
  steps: string[];
}

export interface ServerName {
  /** Hostname (lower case) or IP literal without brackets. */
  host: string;
  port: number | null;
  isIpLiteral: boolean;
}

/**
 * Parse a server name (appendices §Server Name): IPv4 literal, [IPv6] literal or DNS name
 * (letters, digits, "-", "."; no empty labels), then an optional :port. null if invalid.
 */
function parseServerName(name: string): ServerName | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([0-9A-Za-z.-]+))(?::(\d{1,5}))?$/.exec(name);
  if (!m) return null;
  const port = m[3] === undefined ? null : Number(m[3]);
  if (port !== null && (port < 1 || port > 65535)) return null;
  if (m[1] !== undefined) return isIP(m[1]) === 6 ? { host: m[1].toLowerCase(), port, isIpLiteral: true } : null;
  const host = m[2]!.toLowerCase();
  if (isIP(host) === 4) return { host, port, isIpLiteral: true };
  if (host.length > 255 || host.split(".").some((label) => label === "")) return null;
  return { host, port, isIpLiteral: false };
}

export interface DiscoveryOptions {
  resolver: Resolver;
  allowCidrs: readonly Cidr[];
  ca?: string[];
  wellKnownPort?: number;
  defaultPort?: number;
  now?: () => number;
  wellKnownTimeoutMs?: number;
  random?: () => number;
}

type Target = { address: string; port: number };
const bracket = (a: string): string => (a.includes(":") ? `[${a}]` : a);

export function createDiscovery(opts: DiscoveryOptions): { resolve(serverName: string): Promise<ResolvedServer> } {
  const defaultPort = opts.defaultPort ?? 8448;
  const wellKnown = createWellKnownResolver({
    resolver: opts.resolver,
    allowCidrs: opts.allowCidrs,
    ca: opts.ca,
    port: opts.wellKnownPort ?? 443,
    timeoutMs: opts.wellKnownTimeoutMs ?? 10_000,
    now: opts.now ?? Date.now,
    random: opts.random,
    isValidServerName: (v) => parseServerName(v) !== null,
  });

  async function hostTargets(host: string, port: number): Promise<Target[]> {
    const addresses = isIP(host) ? [host] : await opts.resolver.addresses(host);
    return addresses.map((address) => ({ address, port }));
  }

  /** Steps 3.3-3.5 / 4-6: SRV _matrix-fed, then deprecated _matrix, then A/AAAA on 8448. */
  async function viaSrv(host: string, stepNo: [string, string, string], steps: string[]): Promise<Target[]> {
    const services = ["_matrix-fed._tcp", "_matrix._tcp"] as const;
    for (const [i, service] of services.entries()) {
      const records = await opts.resolver.srv(`${service}.${host}`);
      if (records.length === 0) {
        steps.push(`${stepNo[i]}. SRV ${service}.${host}: none`);
        continue;
      }
      // RFC 2782: a single record with target "." means "service decidedly not available".
      if (records.length === 1 && (records[0]!.name === "." || records[0]!.name === "")) {
        steps.push(`${stepNo[i]}. SRV ${service}.${host}: "." (service not available)`);
        throw new FederationError("transport", `${host} says via SRV ${service} that it offers no federation service`);
      }
      const sorted = sortSrv(records, opts.random);
      steps.push(
        `${stepNo[i]}. SRV ${service}.${host}: ${sorted.map((r) => `${r.name}:${r.port} (priority ${r.priority}, weight ${r.weight})`).join(", ")}`,
      );
      const targets: Target[] = [];
      for (const r of sorted) {
        const name = r.name.replace(/\.$/, "");
        const found = await hostTargets(name, r.port);
        steps.push(`   ${name}: ${found.map((t) => t.address).join(", ") || "no A/AAAA records"}`);
        targets.push(...found);
      }
      return targets;
    }
    const targets = await hostTargets(host, defaultPort);
    steps.push(
      `${stepNo[2]}. A/AAAA ${host}: ${targets.map((t) => t.address).join(", ") || "none"} (port ${defaultPort})`,
    );
    return targets;
  }

  function finish(
    serverName: string,
    hostHeader: string,
    tlsServerName: string | null,
    found: Target[],
    steps: string[],
  ): ResolvedServer {
    const seen = new Set<string>();
    const unique = found.filter((t) => !seen.has(`${t.address}|${t.port}`) && seen.add(`${t.address}|${t.port}`));
    const targets = unique.filter((t) => !isBlockedAddress(t.address, opts.allowCidrs));
    const blocked = unique.filter((t) => !targets.includes(t)).map((t) => t.address);
    if (blocked.length > 0) steps.push(`guard: refused private address(es) ${[...new Set(blocked)].join(", ")}`);
    if (unique.length === 0) {
      throw new FederationError("transport", `could not resolve ${serverName}: no addresses found`);
    }
    if (targets.length === 0) {
      throw new FederationError(
        "refused",
        `all addresses of ${serverName} are private or reserved (${[...new Set(blocked)].join(", ")}); --federation-allow-cidrs can permit them`,
      );
    }
    steps.push(
      `connect to ${targets.map((t) => `${bracket(t.address)}:${t.port}`).join(", ")}; Host: ${hostHeader}; TLS name: ${tlsServerName ?? "(IP literal, no SNI)"}`,
    );
    return { serverName, hostHeader, tlsServerName, targets, steps };
  }

  async function resolve(serverName: string): Promise<ResolvedServer> {
    const steps: string[] = [];
    const name = parseServerName(serverName);
    if (!name) throw new FederationError("invalid", `invalid server name ${JSON.stringify(serverName)}`);
    if (name.isIpLiteral) {
      steps.push(`1. ${serverName} is an IP literal`);
      return finish(serverName, serverName, null, [{ address: name.host, port: name.port ?? defaultPort }], steps);
    }
    if (name.port !== null) {
      const targets = await hostTargets(name.host, name.port);
      steps.push(`2. explicit port: A/AAAA ${name.host}: ${targets.map((t) => t.address).join(", ") || "none"}`);
      return finish(serverName, serverName, name.host, targets, steps);
    }
    const wk = await wellKnown.get(name.host);
    steps.push(...wk.steps);
    const delegated = wk.server === null ? null : parseServerName(wk.server);
    if (wk.server !== null && delegated) {
      if (delegated.isIpLiteral) {
        steps.push(`3.1. delegated to the IP literal ${wk.server}`);
        return finish(
          serverName,
          wk.server,
          null,
          [{ address: delegated.host, port: delegated.port ?? defaultPort }],
          steps,
        );
      }
      if (delegated.port !== null) {
        const targets = await hostTargets(delegated.host, delegated.port);
        steps.push(
          `3.2. delegated with explicit port: A/AAAA ${delegated.host}: ${targets.map((t) => t.address).join(", ") || "none"}`,
        );
        return finish(serverName, wk.server, delegated.host, targets, steps);
      }
      const targets = await viaSrv(delegated.host, ["3.3", "3.4", "3.5"], steps);
      return finish(serverName, wk.server, delegated.host, targets, steps);
    }
    const targets = await viaSrv(name.host, ["4", "5", "6"], steps);
    return finish(serverName, serverName, name.host, targets, steps);
  }

  return { resolve };
}
