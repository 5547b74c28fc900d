// Private-address guard for federation (docs/architecture.md "Federation": refused after DNS
// resolution unless --federation-allow-cidrs covers them). A user id names any server it likes; without this
// guard a refresh request could make the proxy open connections into the operator's own
// network (SSRF). The list follows Synapse's DEFAULT_IP_RANGE_BLOCKLIST
// (synapse/config/server.py) plus the addresses Synapse always adds (0.0.0.0, ::) and a few
// reserved ranges it leaves out (0/8, 240/4 incl. broadcast, 64:ff9b:1::/48, 100::/64).
import { isIP } from "node:net";

export type Cidr = {
  readonly text: string;
  readonly family: 4 | 6;
  readonly base: bigint;
  readonly prefix: number;
};

interface Ip {
  family: 4 | 6;
  value: bigint;
}

function parseV4(s: string): bigint | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  let v = 0n;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return null;
    v = (v << 8n) | BigInt(Number(p));
  }
  return v;
}

function parseV6(input: string): bigint | null {
  let s = input;
  // A trailing dotted quad (::ffff:1.2.3.4) stands for the last two groups.
  const lastColon = s.lastIndexOf(":");
  if (s.includes(".", lastColon)) {
    const v4 = parseV4(s.slice(lastColon + 1));
    if (v4 === null) return null;
    s = `${s.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const groups = (h: string): bigint[] | null => {
    if (h === "") return [];
    const out: bigint[] = [];
    for (const g of h.split(":")) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(BigInt(`0x${g}`));
    }
    return out;
  };
  const head = groups(halves[0] ?? "");
  const rest = halves.length === 2 ? groups(halves[1] ?? "") : [];
  if (head === null || rest === null) return null;
  const given = head.length + rest.length;
  if (halves.length === 1 ? given !== 8 : given > 7) return null;
  const all = [...head, ...Array<bigint>(8 - given).fill(0n), ...rest];
  return all.reduce((acc, g) => (acc << 16n) | g, 0n);
}

/** Parse an IP literal (no brackets; an IPv6 zone id is ignored). null when invalid. */
export function parseIp(text: string): Ip | null {
  const s = text.replace(/%.*$/, "");
  const fam = isIP(s);
  if (fam === 4) {
    const v = parseV4(s);
    return v === null ? null : { family: 4, value: v };
  }
  if (fam === 6) {
    const v = parseV6(s);
    return v === null ? null : { family: 6, value: v };
  }
  return null;
}

function parseCidr(entry: string): Cidr | null {
  const slash = entry.indexOf("/");
  const addr = slash < 0 ? entry : entry.slice(0, slash);
  const ip = parseIp(addr);
  if (!ip || addr.includes("%")) return null;
  const width = ip.family === 4 ? 32 : 128;
  let prefix = width;
  if (slash >= 0) {
    const p = entry.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > width) return null;
    prefix = Number(p);
  }
  const hostBits = BigInt(width - prefix);
  // Host bits are masked off, as netaddr does, so "10.1.2.3/8" means 10.0.0.0/8.
  const base = (ip.value >> hostBits) << hostBits;
  return { text: entry, family: ip.family, base, prefix };
}

/** "10.0.0.0/8, ::1/128 127.0.0.1" -> Cidr[]; commas and/or whitespace separate entries. */
export function parseCidrList(text: string): Cidr[] {
  const out: Cidr[] = [];
  for (const entry of text.split(/[\s,]+/)) {
    if (entry === "") continue;
    const c = parseCidr(entry);
    if (!c) throw new Error(`invalid CIDR "${entry}": expected an IPv4 or IPv6 address with an optional /prefix`);
    out.push(c);
  }
  return out;
}

function contains(c: Cidr, ip: Ip): boolean {
  if (c.family !== ip.family) return false;
  const hostBits = BigInt((ip.family === 4 ? 32 : 128) - c.prefix);
  return ip.value >> hostBits === c.base >> hostBits;
}

const BLOCKLIST: readonly Cidr[] = parseCidrList(
  [
    "0.0.0.0/8", // "this network", includes the unspecified 0.0.0.0
    "10.0.0.0/8 172.16.0.0/12 192.168.0.0/16", // RFC 1918
    "100.64.0.0/10", // carrier-grade NAT (RFC 6598)
    "127.0.0.0/8", // loopback
    "169.254.0.0/16", // link-local
    "192.0.0.0/24", // IETF protocol assignments
    "192.0.2.0/24 198.51.100.0/24 203.0.113.0/24 198.18.0.0/15", // documentation, benchmarking
    "192.88.99.0/24", // former 6to4 relay anycast
    "224.0.0.0/4", // multicast
    "240.0.0.0/4", // reserved, includes 255.255.255.255 broadcast
    "::/128 ::1/128", // unspecified, loopback
    "fe80::/10 fec0::/10", // link-local, deprecated site-local
    "fc00::/7", // unique local addresses
    "ff00::/8", // multicast
    "2001:db8::/32", // documentation
    "64:ff9b:1::/48", // local-use NAT64 (RFC 8215)
    "100::/64", // discard-only (RFC 6666)
  ].join(" "),
);

// IPv6 forms that carry an IPv4 address inside: the inner address is checked as well, as
// Synapse's generate_ip_set does for mapped, compatible and 6to4 forms. NAT64's well-known
// prefix (RFC 6052) is treated the same way: the gateway would connect to the inner IPv4.
const EMBEDDING: readonly { net: Cidr; shift: bigint }[] = [
  { net: parseCidrList("::ffff:0:0/96")[0]!, shift: 0n },
  { net: parseCidrList("::/96")[0]!, shift: 0n },
  { net: parseCidrList("64:ff9b::/96")[0]!, shift: 0n },
  { net: parseCidrList("2002::/16")[0]!, shift: 80n },
];

function embeddedV4(ip: Ip): Ip | null {
  if (ip.family !== 6) return null;
  for (const e of EMBEDDING) {
    if (contains(e.net, ip)) return { family: 4, value: (ip.value >> e.shift) & 0xffffffffn };
  }
  return null;
}

/**
 * True when the proxy must not connect to `ip`: it lies in a private, loopback, link-local,
 * CGNAT, multicast or otherwise non-public range and no entry of `allow` covers it.
 * Anything that does not parse as an IP literal is blocked.
 */
export function isBlockedAddress(ip: string, allow: readonly Cidr[]): boolean {
  const parsed = parseIp(ip);
  if (!parsed) return true;
  const inner = embeddedV4(parsed);
  const candidates = inner ? [parsed, inner] : [parsed];
  const blocked = candidates.some((c) => BLOCKLIST.some((b) => contains(b, c)));
  if (!blocked) return false;
  return !candidates.some((c) => allow.some((a) => contains(a, c)));
}
