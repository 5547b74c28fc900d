import type { IncomingMessage } from "node:http";
import net from "node:net";

// Trust in a peer's X-Forwarded-* headers: true (everyone), false, "loopback", or CIDRs.
export type TrustProxy = boolean | "loopback" | string[];

export function parseTrust(list: string[]): TrustProxy {
  if (list.length === 0) return false;
  if (list.length === 1 && (list[0] === "true" || list[0] === "*")) return true;
  if (list.length === 1 && list[0] === "loopback") return "loopback";
  return list;
}

export function trustPredicate(trust: TrustProxy): (ip: string) => boolean {
  if (trust === true) return () => true;
  if (trust === false) return () => false;
  const cidrs = trust === "loopback" ? ["127.0.0.0/8", "::1/128"] : trust;
  const blocks = new net.BlockList();
  for (const c of cidrs) {
    const [addr, bits] = c.split("/");
    const type = net.isIPv6(addr ?? "") ? "ipv6" : "ipv4";
    if (!net.isIP(addr ?? "")) throw new Error(`--trusted-proxies: '${c}' is not 'loopback' or a CIDR`);
    const prefix = bits === undefined ? (type === "ipv6" ? 128 : 32) : Number(bits);
    blocks.addSubnet(addr!, prefix, type);
  }
  return (ip) => net.isIP(ip) !== 0 && blocks.check(ip, net.isIPv6(ip) ? "ipv6" : "ipv4");
}

/**
 * The client address as seen through trusted proxies. X-Forwarded-For is read from right to
 * left: each hop appends, so the right-most untrusted address is the first one nobody we trust
 * vouched for (srvx `_trust-proxy.ts`; RFC 7239 §5.2 has the same model).
 */
export function forwardedHeaders(req: IncomingMessage, trusted: (ip: string) => boolean): Record<string, string> {
  const peer = req.socket.remoteAddress ?? "";
  const peerTrusted = trusted(peer);
  const inboundXff = peerTrusted ? headerValue(req, "x-forwarded-for") : undefined;
  const chain = inboundXff ? [...inboundXff.split(",").map((s) => s.trim()).filter(Boolean), peer] : [peer];
  const proto = (peerTrusted && headerValue(req, "x-forwarded-proto")) || "http";
  const host = (peerTrusted && headerValue(req, "x-forwarded-host")) || headerValue(req, "host") || "";
  return { "x-forwarded-for": chain.join(", "), "x-forwarded-proto": proto, "x-forwarded-host": host };
}

/** The left-most address we can vouch for: the real client, for logs and rate limits. */
export function clientAddress(req: IncomingMessage, trusted: (ip: string) => boolean): string {
  const peer = req.socket.remoteAddress ?? "";
  if (!trusted(peer)) return peer;
  const hops = (headerValue(req, "x-forwarded-for") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  for (let i = hops.length - 1; i >= 0; i--) if (!trusted(hops[i]!)) return hops[i]!;
  return hops[0] ?? peer;
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(", ") : v;
}
