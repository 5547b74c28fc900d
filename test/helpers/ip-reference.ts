// An independent reference for prefix matching, for the ip-guard tests: addresses as 32- or
// 128-bit integers (BigInt), parsed by hand. src/federation/ip-guard.ts uses node:net's
// BlockList instead, so the two share no code and must agree.
import { isIP } from "node:net";

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

/** Does `address/prefix` contain `ip`? Host bits of the network are ignored. */
export function referenceContains(address: string, prefix: number, ip: string): boolean {
  const net = parseIp(address);
  const a = parseIp(ip);
  if (!net || !a || net.family !== a.family) return false;
  const hostBits = BigInt((a.family === 4 ? 32 : 128) - prefix);
  return a.value >> hostBits === net.value >> hostBits;
}
