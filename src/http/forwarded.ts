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

/** Reads one header (repeated fields joined with ", "), case-insensitively. */
export type HeaderReader = (name: string) => string | undefined;

// The real client of a request that reached the app through the Bun front end
// (engine/bun/): there the socket's peer is the front itself. Set only by admitPeer, which
// engine/node/app.ts calls once the front's per-process secret has matched.
const admitted = new WeakMap<IncomingMessage, string>();

/** The address this request came from: the admitted front-end peer, else the socket's peer. */
function peerAddress(req: IncomingMessage): string {
  return admitted.get(req) ?? req.socket.remoteAddress ?? "";
}

/**
 * Record the real client of a request relayed by the front end. The socket's remoteAddress is
 * shadowed too, for code that reads the socket directly (request-log.ts trusts an inbound
 * X-Request-Id by it): the front sends one request at a time on each of its connections to the
 * app, so the socket serves this request alone until its response is complete.
 */
export function admitPeer(req: IncomingMessage, ip: string): void {
  admitted.set(req, ip);
  Object.defineProperty(req.socket, "remoteAddress", { value: ip, configurable: true });
}

/**
 * The client address as seen through trusted proxies. X-Forwarded-For is read from right to
 * left: each hop appends, so the right-most untrusted address is the first one nobody we trust
 * vouched for (srvx `_trust-proxy.ts`; RFC 7239 §5.2 has the same model).
 */
export function forwardedHeaders(req: IncomingMessage, trusted: (ip: string) => boolean): Record<string, string> {
  return forwardedFor(peerAddress(req), (n) => headerValue(req, n), trusted);
}

/** forwardedHeaders for a peer address and a header reader (the front end has no IncomingMessage). */
export function forwardedFor(
  peer: string,
  header: HeaderReader,
  trusted: (ip: string) => boolean,
): Record<string, string> {
  const peerTrusted = trusted(peer);
  const inboundXff = peerTrusted ? header("x-forwarded-for") : undefined;
  const chain = inboundXff
    ? [
        ...inboundXff
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean),
        peer,
      ]
    : [peer];
  const proto = (peerTrusted && header("x-forwarded-proto")) || "http";
  const host = (peerTrusted && header("x-forwarded-host")) || header("host") || "";
  return { "x-forwarded-for": chain.join(", "), "x-forwarded-proto": proto, "x-forwarded-host": host };
}

/** The left-most address we can vouch for: the real client, for logs and rate limits. */
export function clientAddress(req: IncomingMessage, trusted: (ip: string) => boolean): string {
  return clientAddressOf(peerAddress(req), (n) => headerValue(req, n), trusted);
}

export function clientAddressOf(peer: string, header: HeaderReader, trusted: (ip: string) => boolean): string {
  if (!trusted(peer)) return peer;
  const hops = (header("x-forwarded-for") ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  for (let i = hops.length - 1; i >= 0; i--) if (!trusted(hops[i]!)) return hops[i]!;
  return hops[0] ?? peer;
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(", ") : v;
}

// Headers by which the front end names the real client of a request it relays to the app.
export const FRONT_PEER_HEADER = "x-resync-peer";
export const FRONT_SECRET_HEADER = "x-resync-front";
