import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { isBlockedAddress, parseCidrList } from "../../src/federation/ip-guard.ts";
import { parseIp, referenceContains } from "../helpers/ip-reference.ts";

describe("isBlockedAddress without an allow list", () => {
  it.each([
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",
    "100.127.255.255",
    "169.254.169.254",
    "224.0.0.1",
    "239.255.255.250",
    "0.0.0.0",
    "0.1.2.3",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.2.7",
    "198.18.0.1",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "2001:db8::1",
    "fec0::1",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::ffff:10.1.2.3",
    "::127.0.0.1",
    "64:ff9b::10.0.0.1",
    "64:ff9b::a00:1",
    "2002:7f00:1::1",
    "2002:c0a8:101::",
    "64:ff9b:1::1",
  ])("blocks %s", (ip) => {
    expect(isBlockedAddress(ip, [])).toBe(true);
  });

  it.each([
    "8.8.8.8",
    "1.1.1.1",
    "172.32.0.1",
    "100.128.0.1",
    "11.0.0.1",
    "223.255.255.255",
    "2606:4700::1111",
    "2a00:1450:4001::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::8.8.8.8",
    "2002:808:808::1",
  ])("allows public %s", (ip) => {
    expect(isBlockedAddress(ip, [])).toBe(false);
  });

  it.each(["", "localhost", "127.1", "1.2.3.256", "::g", "1::2::3", "[::1]", "01.2.3.4.5"])(
    "blocks the unparseable %j",
    (ip) => {
      expect(isBlockedAddress(ip, [])).toBe(true);
    },
  );
});

describe("allow list", () => {
  const allow = parseCidrList("127.0.0.0/8, ::1/128 10.1.0.0/16");

  it("exempts covered addresses only", () => {
    expect(isBlockedAddress("127.0.0.2", allow)).toBe(false);
    expect(isBlockedAddress("::1", allow)).toBe(false);
    expect(isBlockedAddress("10.1.200.3", allow)).toBe(false);
    expect(isBlockedAddress("10.2.0.1", allow)).toBe(true);
    expect(isBlockedAddress("192.168.0.1", allow)).toBe(true);
  });

  it("checks the IPv4 address inside IPv4-mapped IPv6 against it", () => {
    expect(isBlockedAddress("::ffff:127.0.0.1", allow)).toBe(false);
    expect(isBlockedAddress("::ffff:10.2.0.1", allow)).toBe(true);
  });
});

describe("parseCidrList", () => {
  it("parses, masks host bits and keeps the text", () => {
    const list = parseCidrList(" 10.1.2.3/8 ,fd00::/8  192.0.2.1 ");
    expect(list.map((c) => c.text)).toEqual(["10.1.2.3/8", "fd00::/8", "192.0.2.1"]);
    expect(isBlockedAddress("10.200.0.1", list)).toBe(false);
    expect(isBlockedAddress("192.0.2.1", list)).toBe(false);
    expect(isBlockedAddress("192.0.2.2", list)).toBe(true);
  });

  it("accepts an empty list", () => {
    expect(parseCidrList("")).toEqual([]);
  });

  it.each(["10.0.0.0/33", "::/129", "10.0.0/8", "example.com", "10.0.0.0/", "fe80::1%lo/64", "10.0.0.0/-1"])(
    "names the bad entry %s",
    (bad) => {
      expect(() => parseCidrList(`127.0.0.0/8, ${bad}`)).toThrow(bad);
    },
  );
});

// The guard matches with node:net's BlockList; test/helpers/ip-reference.ts is an independent
// BigInt implementation of prefix matching. Compare them on addresses inside blocked ranges.
describe("prefix matching agrees with an independent reference", () => {
  const v4In10 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255)).map(([a, b, c]) => `10.${a}.${b}.${c}`);
  const v4Cidr = fc
    .tuple(fc.nat(255), fc.nat(255), fc.integer({ min: 0, max: 32 }))
    .map(([a, b, p]) => ({ addr: `10.${a}.${b}.0`, prefix: p }));

  it("IPv4", () => {
    fc.assert(
      fc.property(v4In10, v4Cidr, (ip, c0) => {
        // Half the time the network is built around the address itself, so both outcomes occur.
        const c = c0.prefix % 2 === 0 ? { addr: ip, prefix: c0.prefix } : c0;
        const allow = parseCidrList(`${c.addr}/${c.prefix}`);
        expect(isBlockedAddress(ip, allow)).toBe(!referenceContains(c.addr, c.prefix, ip));
      }),
      { numRuns: 300 },
    );
  });

  const group = fc.nat(0xffff).map((n) => n.toString(16));
  // Addresses in fd00::/8, written in full or with a "::" run compressed.
  const v6InUla = fc
    .tuple(fc.nat(255), fc.array(group, { minLength: 7, maxLength: 7 }), fc.nat(7), fc.nat(7))
    .map(([b, rest, from, len]) => {
      const groups = [(0xfd00 + b).toString(16), ...rest];
      const end = Math.min(8, from + 1 + len);
      if (from === 0) return groups.join(":");
      const zeroed = groups.map((g, i) => (i >= from && i < end ? "0" : g));
      const text = `${zeroed.slice(0, from).join(":")}::${zeroed.slice(end).join(":")}`;
      return { text, full: zeroed.join(":") };
    });

  it("IPv6, including :: compression", () => {
    fc.assert(
      fc.property(v6InUla, fc.integer({ min: 0, max: 128 }), v6InUla, (ipv, prefix, netv) => {
        const ip = typeof ipv === "string" ? ipv : ipv.text;
        const full = typeof ipv === "string" ? ipv : ipv.full;
        expect(parseIp(ip)?.value).toBe(parseIp(full)?.value);
        const other = typeof netv === "string" ? netv : netv.full;
        const net = prefix % 2 === 0 ? full : other;
        const allow = parseCidrList(`${net}/${prefix}`);
        // The compressed form as the client's resolver may give it, the reference reads the full one.
        expect(isBlockedAddress(ip, allow)).toBe(!referenceContains(net, prefix, full));
      }),
      { numRuns: 300 },
    );
  });

  it("reads a trailing dotted quad like the equivalent hex form", () => {
    const allow = parseCidrList("::ffff:10.1.0.0/112, 1:2:3:4:5:6:102:304/128");
    expect(isBlockedAddress("::ffff:10.1.2.3", [])).toBe(true);
    expect(isBlockedAddress("::ffff:a01:203", [])).toBe(true);
    expect(isBlockedAddress("::ffff:8.8.8.8", [])).toBe(false);
    expect(isBlockedAddress("::ffff:10.1.2.3", allow)).toBe(false);
    expect(isBlockedAddress("::ffff:a01:203", allow)).toBe(false);
    expect(isBlockedAddress("::ffff:10.2.0.1", allow)).toBe(true);
    expect(isBlockedAddress("1:2:3:4:5:6:7:1.2.3.4", [])).toBe(true); // not an address: blocked
  });

  it("checks the IPv4 inside compatible, NAT64 and 6to4 forms", () => {
    for (const ip of ["::10.0.0.1", "64:ff9b::7f00:1", "2002:c0a8:101::1", "2002:7f00:1::"])
      expect(isBlockedAddress(ip, [])).toBe(true);
    for (const ip of ["64:ff9b::808:808", "2002:808:808::1"]) expect(isBlockedAddress(ip, [])).toBe(false);
    expect(isBlockedAddress("2002:c0a8:101::1", parseCidrList("192.168.1.0/24"))).toBe(false);
  });

  it("an allow entry covers addresses of its own family only", () => {
    // BlockList alone would let an IPv4-mapped IPv6 network cover an IPv4 address.
    expect(isBlockedAddress("10.1.2.3", parseCidrList("::ffff:10.0.0.0/104"))).toBe(true);
    expect(isBlockedAddress("fe80::1%eth0", parseCidrList("fe80::/10"))).toBe(false);
  });
});
