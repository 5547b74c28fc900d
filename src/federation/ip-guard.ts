// Private-address guard for federation (docs/architecture.md "Federation": refused after DNS
// resolution unless --federation-allow-cidrs covers them). A user id names any server it likes; without this
// guard a refresh request could make the proxy open connections into the operator's own
// network (SSRF). The list follows Synapse's DEFAULT_IP_RANGE_BLOCKLIST
// (synapse/config/server.py) plus the addresses Synapse always adds (0.0.0.0, ::) and a few
// reserved ranges it leaves out (0/8, 240/4 incl. broadcast, 64:ff9b:1::/48, 100::/64).
import { BlockList, isIP } from "node:net";

// Prefix matching is node:net's BlockList (Bun, Deno and Node alike). Each address is checked
// only against networks of its own family: BlockList would also match an IPv4-mapped IPv6
// address against an IPv4 network, and the IPv4 inside IPv6 forms is checked explicitly below.

export type Cidr = {
  readonly text: string;
  readonly family: 4 | 6;
  readonly address: string;
  readonly prefix: number;
};

function parseCidr(entry: string): Cidr | null {
  const slash = entry.indexOf("/");
  const address = slash < 0 ? entry : entry.slice(0, slash);
  // isIP accepts an IPv6 zone id ("fe80::1%lo"); a zone names an interface, never a network.
  const family = address.includes("%") ? 0 : isIP(address);
  if (family === 0) return null;
  const width = family === 4 ? 32 : 128;
  let prefix = width;
  if (slash >= 0) {
    const p = entry.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > width) return null;
    prefix = Number(p);
  }
  // Host bits are ignored, as netaddr does, so "10.1.2.3/8" means 10.0.0.0/8 (BlockList masks them).
  return { text: entry, family: family as 4 | 6, address, prefix };
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

interface Networks {
  v4: BlockList;
  v6: BlockList;
}

const built = new WeakMap<readonly Cidr[], Networks>();

function networks(list: readonly Cidr[]): Networks {
  let n = built.get(list);
  if (!n) {
    n = { v4: new BlockList(), v6: new BlockList() };
    for (const c of list)
      (c.family === 4 ? n.v4 : n.v6).addSubnet(c.address, c.prefix, c.family === 4 ? "ipv4" : "ipv6");
    built.set(list, n);
  }
  return n;
}

interface Ip {
  family: 4 | 6;
  text: string;
}

const covers = (n: Networks, ip: Ip): boolean =>
  ip.family === 4 ? n.v4.check(ip.text, "ipv4") : n.v6.check(ip.text, "ipv6");

const BLOCKED: Networks = networks(
  parseCidrList(
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
  ),
);

// IPv6 forms that carry an IPv4 address inside: the inner address is checked as well, as
// Synapse's generate_ip_set does for mapped, compatible and 6to4 forms. NAT64's well-known
// prefix (RFC 6052) is treated the same way: the gateway would connect to the inner IPv4.
// `at`: the index of the first of the two 16-bit groups that hold it.
const EMBEDDING: readonly { net: Networks; at: number }[] = [
  { net: networks(parseCidrList("::ffff:0:0/96")), at: 6 },
  { net: networks(parseCidrList("::/96")), at: 6 },
  { net: networks(parseCidrList("64:ff9b::/96")), at: 6 },
  { net: networks(parseCidrList("2002::/16")), at: 1 },
];

/** The eight 16-bit groups of an IPv6 literal, read from its WHATWG URL serialization (compressed, hex only). */
function groups(ip: string): number[] {
  const host = new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  const [head = "", tail] = host.split("::");
  const h = head === "" ? [] : head.split(":");
  const t = tail === undefined || tail === "" ? [] : tail.split(":");
  const zeros = tail === undefined ? [] : Array<string>(8 - h.length - t.length).fill("0");
  return [...h, ...zeros, ...t].map((g) => parseInt(g, 16));
}

function embeddedV4(ip: Ip): Ip | null {
  if (ip.family !== 6) return null;
  for (const e of EMBEDDING) {
    if (!covers(e.net, ip)) continue;
    const g = groups(ip.text);
    const hi = g[e.at]!;
    const lo = g[e.at + 1]!;
    return { family: 4, text: `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}` };
  }
  return null;
}

/**
 * True when the proxy must not connect to `ip`: it lies in a private, loopback, link-local,
 * CGNAT, multicast or otherwise non-public range and no entry of `allow` covers it.
 * Anything that does not parse as an IP literal is blocked; an IPv6 zone id is ignored.
 */
export function isBlockedAddress(ip: string, allow: readonly Cidr[]): boolean {
  const text = ip.replace(/%.*$/, "");
  const family = isIP(text);
  if (family === 0) return true;
  const parsed: Ip = { family: family as 4 | 6, text };
  const inner = embeddedV4(parsed);
  const candidates = inner ? [parsed, inner] : [parsed];
  if (!candidates.some((c) => covers(BLOCKED, c))) return false;
  const allowed = networks(allow);
  return !candidates.some((c) => covers(allowed, c));
}
