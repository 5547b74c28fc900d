import type { IncomingMessage } from "node:http";
import { describe, expect, test } from "vitest";
import { clientAddress, forwardedHeaders, parseTrust, trustPredicate } from "../../src/http/forwarded.ts";
import { stripHopByHop } from "../../src/http/upstream.ts";

const req = (peer: string, headers: Record<string, string>) =>
  ({ socket: { remoteAddress: peer }, headers }) as unknown as IncomingMessage;

describe("trusted proxies", () => {
  test("parseTrust models boolean | loopback | CIDRs", () => {
    expect(parseTrust([])).toBe(false);
    expect(parseTrust(["loopback"])).toBe("loopback");
    expect(parseTrust(["10.0.0.0/8", "::1/128"])).toEqual(["10.0.0.0/8", "::1/128"]);
  });

  test("loopback trust covers 127/8, ::1 and IPv4-mapped loopback only", () => {
    const t = trustPredicate("loopback");
    expect([t("127.0.0.1"), t("127.9.9.9"), t("::1"), t("::ffff:127.0.0.1")]).toEqual([true, true, true, true]);
    expect([t("10.0.0.1"), t("::2"), t("not-an-ip")]).toEqual([false, false, false]);
  });

  test("a bad CIDR names the flag", () => {
    expect(() => trustPredicate(["10.0.0.0/8", "nope"])).toThrow(/--trusted-proxies: 'nope'/);
  });

  test("X-Forwarded-For is read right to left, stopping at the first untrusted hop", () => {
    const t = trustPredicate(["10.0.0.0/8"]);
    const r = req("10.0.0.2", { "x-forwarded-for": "198.51.100.1, 203.0.113.5, 10.0.0.9" });
    expect(clientAddress(r, t)).toBe("203.0.113.5"); // 198.51.100.1 was only claimed by 203.0.113.5
    expect(forwardedHeaders(r, t)["x-forwarded-for"]).toBe("198.51.100.1, 203.0.113.5, 10.0.0.9, 10.0.0.2");
    expect(clientAddress(req("203.0.113.7", { "x-forwarded-for": "1.2.3.4" }), t)).toBe("203.0.113.7");
  });
});

test("stripHopByHop removes RFC 9110 §7.6.1 headers and those Connection names", () => {
  expect(
    stripHopByHop({
      connection: "close, X-Secret",
      "x-secret": "1",
      "keep-alive": "5",
      te: "trailers",
      "transfer-encoding": "chunked",
      upgrade: "h2c",
      "proxy-connection": "x",
      "content-type": "a/b",
    }),
  ).toEqual({ "content-type": "a/b" });
});
