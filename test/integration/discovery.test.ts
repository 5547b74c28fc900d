// Server discovery over real sockets: a dns2 server on 127.0.0.1, HTTPS servers on 127.0.1.x
// with certificates from a throw-away openssl CA. Ports 443 and 8448 are replaced by two
// ephemeral ports (wellKnownPort / defaultPort) reserved for the whole file.
import { createServer, type Server } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createDiscovery, type ResolvedServer } from "../../src/federation/discovery.ts";
import { createResolver } from "../../src/federation/dns.ts";
import { FederationError } from "../../src/federation/errors.ts";
import { httpsRequest } from "../../src/federation/https.ts";
import { parseCidrList } from "../../src/federation/ip-guard.ts";
import { cachePeriodSeconds } from "../../src/federation/well-known.ts";
import { startDnsServer, type TestDnsServer } from "../helpers/dns-server.ts";
import {
  createTestCa,
  json,
  startHttpsServer,
  type TestCa,
  type TestHandler,
  type TestHttpsServer,
} from "../helpers/tls.ts";

let dns: TestDnsServer;
let ca: TestCa;
let WK = 0; // stands in for 443
let FED = 0; // stands in for 8448
const reservations: Server[] = [];
const servers: TestHttpsServer[] = [];
const LOOPBACK = parseCidrList("127.0.0.0/8 ::1/128");

async function reservePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  reservations.push(s);
  return (s.address() as { port: number }).port;
}

beforeAll(async () => {
  dns = await startDnsServer();
  ca = createTestCa();
  WK = await reservePort();
  FED = await reservePort();
});
afterAll(async () => {
  await dns.close();
  ca.cleanup();
  for (const s of reservations) s.close();
});
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function serve(host: string, sans: string[], handler: TestHandler, port = 0): Promise<TestHttpsServer> {
  const s = await startHttpsServer({ host, port, cert: ca.issue(sans[0]!.replace(/^\w+:/, ""), sans), handler });
  servers.push(s);
  return s;
}
const wellKnown = (host: string, ip: string, body: unknown, headers: Record<string, string> = {}) =>
  serve(ip, [`DNS:${host}`], json(body, 200, headers), WK);
const fedServer = (ip: string, sans: string[], id: string, port = 0) => serve(ip, sans, json({ id }), port);

function discovery(extra: Partial<Parameters<typeof createDiscovery>[0]> = {}) {
  return createDiscovery({
    resolver: createResolver({ dnsServer: dns.address, timeoutMs: 2000 }),
    allowCidrs: LOOPBACK,
    ca: [ca.caPem],
    wellKnownPort: WK,
    defaultPort: FED,
    wellKnownTimeoutMs: 3000,
    ...extra,
  });
}

/** Make the request a client would make against the first target; returns the answering server's id. */
async function call(r: ResolvedServer): Promise<string> {
  const t = r.targets[0]!;
  const res = await httpsRequest({
    address: t.address,
    port: t.port,
    tlsServerName: r.tlsServerName,
    hostHeader: r.hostHeader,
    method: "GET",
    path: "/_matrix/federation/v1/version",
    ca: [ca.caPem],
    timeoutMs: 5000,
    maxBytes: 65536,
  });
  return (JSON.parse(Buffer.from(res.body).toString()) as { id: string }).id;
}

describe("step 1: IP literals", () => {
  it("uses the IP and port, Host = server name, no SNI, certificate checked against the IP", async () => {
    const s = await fedServer("127.0.1.1", ["IP:127.0.1.1"], "ip");
    const name = `127.0.1.1:${s.port}`;
    const r = await discovery().resolve(name);
    expect(r).toMatchObject({
      serverName: name,
      hostHeader: name,
      tlsServerName: null,
      targets: [{ address: "127.0.1.1", port: s.port }],
    });
    expect(await call(r)).toBe("ip");
    expect(s.requests[0]).toMatchObject({ host: name, servername: null });
    expect(dns.queries.filter((q) => q.name.includes("127.0.1.1"))).toEqual([]);
  });

  it("defaults to port 8448 and handles [IPv6] literals", async () => {
    const s = await fedServer("::1", ["IP:::1"], "v6", FED);
    const r = await discovery().resolve("[::1]");
    expect(r).toMatchObject({ hostHeader: "[::1]", tlsServerName: null, targets: [{ address: "::1", port: FED }] });
    expect(await call(r)).toBe("v6");
    expect(s.requests[0]).toMatchObject({ host: "[::1]", servername: null });
  });

  it("rejects a certificate that does not name the IP", async () => {
    const s = await fedServer("127.0.1.2", ["DNS:other.test"], "x");
    await expect(call(await discovery().resolve(`127.0.1.2:${s.port}`))).rejects.toMatchObject({ kind: "transport" });
  });
});

describe("step 2: explicit port", () => {
  it("resolves A/AAAA, skips .well-known and SRV, Host = name:port, SNI = name", async () => {
    dns.setA("explicit.test", "127.0.1.3");
    const wk = await wellKnown("explicit.test", "127.0.1.3", { "m.server": "elsewhere.test" });
    const s = await fedServer("127.0.1.3", ["DNS:explicit.test"], "explicit");
    const name = `explicit.test:${s.port}`;
    const r = await discovery().resolve(name);
    expect(r).toMatchObject({
      hostHeader: name,
      tlsServerName: "explicit.test",
      targets: [{ address: "127.0.1.3", port: s.port }],
    });
    expect(await call(r)).toBe("explicit");
    expect(s.requests[0]).toMatchObject({ host: name, servername: "explicit.test" });
    expect(wk.connections).toBe(0);
    expect(dns.queries.some((q) => q.type === "SRV" && q.name.endsWith("explicit.test"))).toBe(false);
  });
});

describe("step 3: .well-known delegation", () => {
  it("3.1 delegates to an IP literal", async () => {
    dns.setA("wk-ip.test", "127.0.1.4");
    const s = await fedServer("127.0.1.5", ["IP:127.0.1.5"], "wk-ip");
    const wk = await wellKnown("wk-ip.test", "127.0.1.4", { "m.server": `127.0.1.5:${s.port}` });
    const r = await discovery().resolve("wk-ip.test");
    expect(r).toMatchObject({ serverName: "wk-ip.test", hostHeader: `127.0.1.5:${s.port}`, tlsServerName: null });
    expect(await call(r)).toBe("wk-ip");
    expect(wk.requests[0]).toMatchObject({
      url: "/.well-known/matrix/server",
      host: "wk-ip.test",
      servername: "wk-ip.test",
    });
    expect(s.requests[0]).toMatchObject({ servername: null });
  });

  it("3.2 delegates with an explicit port; the certificate only names the delegated host", async () => {
    dns.setA("wk-port.test", "127.0.1.6");
    dns.setA("deleg-port.test", "127.0.1.7");
    const s = await fedServer("127.0.1.7", ["DNS:deleg-port.test"], "deleg-port");
    await wellKnown("wk-port.test", "127.0.1.6", { "m.server": `deleg-port.test:${s.port}` });
    const r = await discovery().resolve("wk-port.test");
    expect(r).toMatchObject({
      hostHeader: `deleg-port.test:${s.port}`,
      tlsServerName: "deleg-port.test",
      targets: [{ address: "127.0.1.7", port: s.port }],
    });
    expect(await call(r)).toBe("deleg-port");
    expect(s.requests[0]).toMatchObject({ host: `deleg-port.test:${s.port}`, servername: "deleg-port.test" });
  });

  it("3.3 SRV _matrix-fed._tcp of the delegated name; Host and certificate = delegated name", async () => {
    dns.setA("wk-srv.test", "127.0.1.8");
    dns.setA("srv-target.test", "127.0.1.9");
    const s = await fedServer("127.0.1.9", ["DNS:deleg-srv.test"], "deleg-srv");
    dns.setSrv("_matrix-fed._tcp.deleg-srv.test", { target: "srv-target.test", port: s.port });
    await wellKnown("wk-srv.test", "127.0.1.8", { "m.server": "deleg-srv.test" });
    const r = await discovery().resolve("wk-srv.test");
    expect(r).toMatchObject({
      hostHeader: "deleg-srv.test",
      tlsServerName: "deleg-srv.test",
      targets: [{ address: "127.0.1.9", port: s.port }],
    });
    expect(await call(r)).toBe("deleg-srv");
    expect(s.requests[0]).toMatchObject({ host: "deleg-srv.test", servername: "deleg-srv.test" });
  });

  it("3.4 deprecated SRV _matrix._tcp of the delegated name", async () => {
    dns.setA("wk-legacy.test", "127.0.1.10");
    dns.setA("legacy-target.test", "127.0.1.11");
    const s = await fedServer("127.0.1.11", ["DNS:deleg-legacy.test"], "deleg-legacy");
    dns.setSrv("_matrix._tcp.deleg-legacy.test", { target: "legacy-target.test", port: s.port });
    await wellKnown("wk-legacy.test", "127.0.1.10", { "m.server": "deleg-legacy.test" });
    const r = await discovery().resolve("wk-legacy.test");
    expect(r).toMatchObject({ hostHeader: "deleg-legacy.test", tlsServerName: "deleg-legacy.test" });
    expect(await call(r)).toBe("deleg-legacy");
    expect(r.steps.join("\n")).toMatch(/3\.3\. SRV _matrix-fed\._tcp\.deleg-legacy\.test: none/);
  });

  it("3.5 A/AAAA of the delegated name on 8448", async () => {
    dns.setA("wk-8448.test", "127.0.1.12");
    dns.setA("deleg-8448.test", "127.0.1.13");
    const s = await fedServer("127.0.1.13", ["DNS:deleg-8448.test"], "deleg-8448", FED);
    await wellKnown("wk-8448.test", "127.0.1.12", { "m.server": "deleg-8448.test" });
    const r = await discovery().resolve("wk-8448.test");
    expect(r).toMatchObject({
      hostHeader: "deleg-8448.test",
      tlsServerName: "deleg-8448.test",
      targets: [{ address: "127.0.1.13", port: FED }],
    });
    expect(await call(r)).toBe("deleg-8448");
    expect(s.requests[0]?.host).toBe("deleg-8448.test");
  });
});

describe("steps 4-6: no .well-known", () => {
  it("4. SRV _matrix-fed._tcp; Host and certificate = server name, SNI = server name", async () => {
    dns.setA("nowk-fed.test", "127.0.1.14"); // nothing listens on 127.0.1.14:WK
    dns.setA("fed-target.test", "127.0.1.15");
    const s = await fedServer("127.0.1.15", ["DNS:nowk-fed.test"], "nowk-fed");
    dns.setSrv("_matrix-fed._tcp.nowk-fed.test", { target: "fed-target.test", port: s.port });
    const r = await discovery().resolve("nowk-fed.test");
    expect(r).toMatchObject({
      hostHeader: "nowk-fed.test",
      tlsServerName: "nowk-fed.test",
      targets: [{ address: "127.0.1.15", port: s.port }],
    });
    expect(await call(r)).toBe("nowk-fed");
    expect(s.requests[0]).toMatchObject({ host: "nowk-fed.test", servername: "nowk-fed.test" });
    expect(r.steps.join("\n")).toMatch(/\.well-known for nowk-fed\.test unusable/);
  });

  it("4. rejects an SRV target whose certificate names only the SRV target", async () => {
    dns.setA("badcert.test", "127.0.1.16");
    dns.setA("badcert-target.test", "127.0.1.17");
    const s = await fedServer("127.0.1.17", ["DNS:badcert-target.test"], "wrong");
    dns.setSrv("_matrix-fed._tcp.badcert.test", { target: "badcert-target.test", port: s.port });
    const r = await discovery().resolve("badcert.test");
    expect(r.tlsServerName).toBe("badcert.test");
    const err = await call(r).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FederationError);
    expect(String((err as Error).message)).toMatch(/altnames|ALTNAME|does not match/i);
    expect(s.requests).toEqual([]);
  });

  it("5. deprecated SRV _matrix._tcp", async () => {
    dns.setA("legacy-target2.test", "127.0.1.18");
    dns.touch("nowk-legacy.test"); // exists, no A record: .well-known cannot be fetched
    const s = await fedServer("127.0.1.18", ["DNS:nowk-legacy.test"], "nowk-legacy");
    dns.setSrv("_matrix._tcp.nowk-legacy.test", { target: "legacy-target2.test", port: s.port });
    const r = await discovery().resolve("nowk-legacy.test");
    expect(r).toMatchObject({ hostHeader: "nowk-legacy.test", tlsServerName: "nowk-legacy.test" });
    expect(await call(r)).toBe("nowk-legacy");
    expect(r.steps.join("\n")).toMatch(/4\. SRV _matrix-fed\._tcp\.nowk-legacy\.test: none/);
  });

  it("6. A/AAAA on port 8448", async () => {
    dns.setA("nowk-8448.test", "127.0.1.19");
    const s = await fedServer("127.0.1.19", ["DNS:nowk-8448.test"], "nowk-8448", FED);
    const r = await discovery().resolve("nowk-8448.test");
    expect(r).toMatchObject({
      hostHeader: "nowk-8448.test",
      tlsServerName: "nowk-8448.test",
      targets: [{ address: "127.0.1.19", port: FED }],
    });
    expect(await call(r)).toBe("nowk-8448");
    expect(s.requests[0]).toMatchObject({ host: "nowk-8448.test", servername: "nowk-8448.test" });
  });

  it("orders SRV targets by priority, then weight", async () => {
    dns.touch("prio.test");
    dns.setA("p20.test", "127.0.1.20");
    dns.setA("p10-w0.test", "127.0.1.21");
    dns.setA("p10-w100.test", "127.0.1.22");
    dns.setSrv(
      "_matrix-fed._tcp.prio.test",
      { target: "p20.test", port: 1001, priority: 20, weight: 100 },
      { target: "p10-w0.test", port: 1002, priority: 10, weight: 0 },
      { target: "p10-w100.test", port: 1003, priority: 10, weight: 100 },
    );
    for (let i = 0; i < 5; i++) {
      const r = await discovery().resolve("prio.test");
      expect(r.targets).toEqual([
        { address: "127.0.1.22", port: 1003 },
        { address: "127.0.1.21", port: 1002 },
        { address: "127.0.1.20", port: 1001 },
      ]);
    }
  });

  it('fails when SRV says the service is unavailable (target ".")', async () => {
    dns.touch("dot.test");
    dns.setSrv("_matrix-fed._tcp.dot.test", { target: ".", port: 0 });
    await expect(discovery().resolve("dot.test")).rejects.toMatchObject({ kind: "transport" });
  });

  it("fails with a transport error when nothing resolves", async () => {
    await expect(discovery().resolve("nxdomain.test")).rejects.toMatchObject({
      kind: "transport",
      message: expect.stringMatching(/no addresses/),
    });
  });
});

/** Redirects /r1 -> /r2 -> ... forever, never repeating a URL. */
function chain(): TestHandler {
  let n = 0;
  return (_req, res) => void res.writeHead(301, { location: `/r${++n}` }).end();
}

describe(".well-known fetching and caching", () => {
  async function delegating(host: string, ip: string, handler: TestHandler) {
    dns.setA(host, ip);
    const wk = await serve(ip, [`DNS:${host}`], handler, WK);
    return wk;
  }

  it("caches per Cache-Control max-age and refetches in the last 20 % of it", async () => {
    let clock = 1_000_000;
    const wk = await delegating(
      "cache.test",
      "127.0.1.30",
      json({ "m.server": "127.0.1.31:1234" }, 200, { "cache-control": "public, max-age=600" }),
    );
    const d = discovery({ now: () => clock });
    await d.resolve("cache.test");
    clock += 470_000; // < 480 s = 600 s - 20 %
    expect((await d.resolve("cache.test")).hostHeader).toBe("127.0.1.31:1234");
    expect(wk.requests.length).toBe(1);
    clock += 20_000;
    await d.resolve("cache.test");
    expect(wk.requests.length).toBe(2);
  });

  it("clamps a tiny max-age to 5 minutes and defaults to 24 h", async () => {
    let clock = 1_000_000;
    const tiny = await delegating(
      "tiny.test",
      "127.0.1.32",
      json({ "m.server": "127.0.1.31:1234" }, 200, { "cache-control": "max-age=1" }),
    );
    const plain = await delegating("plain.test", "127.0.1.33", json({ "m.server": "127.0.1.31:1234" }));
    const d = discovery({ now: () => clock, random: () => 0.5 });
    await d.resolve("tiny.test");
    await d.resolve("plain.test");
    clock += 200_000; // < 240 s
    await d.resolve("tiny.test");
    expect(tiny.requests.length).toBe(1);
    clock += 50_000;
    await d.resolve("tiny.test");
    expect(tiny.requests.length).toBe(2);
    clock = 1_000_000 + 19 * 3600_000; // < 0.8 x 24 h
    await d.resolve("plain.test");
    expect(plain.requests.length).toBe(1);
    clock = 1_000_000 + 20 * 3600_000;
    await d.resolve("plain.test");
    expect(plain.requests.length).toBe(2);
  });

  it("caches a failure for an hour", async () => {
    let clock = 1_000_000;
    const wk = await delegating("err.test", "127.0.1.34", json({ errcode: "M_NOT_FOUND" }, 404));
    const d = discovery({ now: () => clock, random: () => 0.5 });
    expect((await d.resolve("err.test")).steps.join("\n")).toMatch(/HTTP 404\); cached 3600 s/);
    clock += 2800_000; // < 0.8 h
    expect((await d.resolve("err.test")).steps.join("\n")).toMatch(/cached absence/);
    expect(wk.requests.length).toBe(1);
    clock += 100_000;
    await d.resolve("err.test");
    expect(wk.requests.length).toBe(2);
  });

  it("keeps a cached delegation through a temporary failure, then caches the failure briefly", async () => {
    let clock = 1_000_000;
    let up = true;
    const ok = json({ "m.server": "127.0.1.31:1234" }, 200, { "cache-control": "max-age=600" });
    const wk = await delegating("flaky.test", "127.0.1.38", (req, res) =>
      up ? ok(req, res) : void res.writeHead(503).end(),
    );
    const d = discovery({ now: () => clock, random: () => 0.5 });
    await d.resolve("flaky.test");
    up = false;
    clock += 500_000; // inside the refetch window, entry still valid
    expect((await d.resolve("flaky.test")).hostHeader).toBe("127.0.1.31:1234");
    expect(wk.requests.length).toBe(2);
    clock += 200_000; // entry expired: the failure is cached for 2 min, as the name recently had one
    const r = await d.resolve("flaky.test");
    expect(r.hostHeader).toBe("flaky.test");
    expect(r.steps.join("\n")).toMatch(/HTTP 503\); cached 120 s/);
  });

  it("shares one .well-known fetch between concurrent resolutions", async () => {
    const wk = await delegating("shared.test", "127.0.1.39", json({ "m.server": "127.0.1.31:1234" }));
    const d = discovery();
    const all = await Promise.all([d.resolve("shared.test"), d.resolve("shared.test"), d.resolve("SHARED.test")]);
    expect(all.map((r) => r.hostHeader)).toEqual(Array(3).fill("127.0.1.31:1234"));
    expect(wk.requests.length).toBe(1);
  });

  it("reads cache periods from Cache-Control and Expires", () => {
    const now = Date.parse("2030-01-01T00:00:00Z");
    expect(cachePeriodSeconds({ "cache-control": "no-store, max-age=60" }, now)).toBe(0);
    expect(cachePeriodSeconds({ "cache-control": ["public", "Max-Age=90"] }, now)).toBe(90);
    expect(cachePeriodSeconds({ expires: "Tue, 01 Jan 2030 01:00:00 GMT" }, now)).toBe(3600);
    expect(cachePeriodSeconds({ expires: "Monday, 31-Dec-29 23:00:00 GMT" }, now)).toBe(-3600);
    expect(cachePeriodSeconds({ expires: "Tue Jan  1 00:10:00 2030" }, now)).toBe(600);
    expect(cachePeriodSeconds({ expires: "0" }, now)).toBe(0);
    expect(cachePeriodSeconds({ expires: "tomorrow" }, now)).toBe(0);
    expect(cachePeriodSeconds({}, now)).toBeNull();
  });

  it("follows redirects", async () => {
    const wk = await delegating("redir.test", "127.0.1.35", (req, res) => {
      if (req.url === "/.well-known/matrix/server") {
        res.writeHead(302, { location: "/elsewhere" }).end();
      } else json({ "m.server": "127.0.1.36:4321" })(req, res);
    });
    const r = await discovery().resolve("redir.test");
    expect(r.hostHeader).toBe("127.0.1.36:4321");
    expect(wk.requests.map((q) => q.url)).toEqual(["/.well-known/matrix/server", "/elsewhere"]);
  });

  it.each([
    [
      "a redirect loop",
      (_req: unknown, res: import("node:http").ServerResponse) =>
        res.writeHead(302, { location: "/.well-known/matrix/server" }).end(),
      /redirect loop/,
    ],
    ["too many redirects", chain(), /more than 5 redirects/],
    ["an oversized body", json({ "m.server": "127.0.1.36:4321", pad: "x".repeat(60 * 1024) }), /exceeds|declares/],
    ["invalid JSON", (_req: unknown, res: import("node:http").ServerResponse) => res.end("{not json"), /not JSON/],
    ["an invalid m.server", json({ "m.server": "bad..name" }), /not a valid server name/],
    ["a non-object body", json(["m.server"]), /no string "m.server"/],
  ] as const)("falls back to SRV/8448 on %s", async (_label, handler, why) => {
    const host = `fallback-${Math.random().toString(36).slice(2, 8)}.test`;
    const ip = "127.0.1.37";
    await delegating(host, ip, handler as TestHandler);
    const s = await fedServer(ip, [`DNS:${host}`], "fallback", FED);
    const r = await discovery().resolve(host);
    expect(r).toMatchObject({ hostHeader: host, tlsServerName: host, targets: [{ address: ip, port: FED }] });
    expect(r.steps.join("\n")).toMatch(why);
    expect(await call(r)).toBe("fallback");
    expect(s.requests.length).toBe(1);
  });
});

describe("private-address guard", () => {
  it("refuses loopback without allow-cidrs and never connects, not even for .well-known", async () => {
    dns.setA("guarded.test", "127.0.1.40");
    const wk = await wellKnown("guarded.test", "127.0.1.40", { "m.server": "guarded.test" });
    const s = await fedServer("127.0.1.40", ["DNS:guarded.test", "IP:127.0.1.40"], "guarded", FED);
    const d = discovery({ allowCidrs: [] });
    const err = await d.resolve("guarded.test").catch((e: unknown) => e);
    expect(err).toMatchObject({
      kind: "refused",
      message: expect.stringMatching(/all addresses of guarded\.test are private/),
    });
    await expect(d.resolve(`127.0.1.40:${FED}`)).rejects.toMatchObject({ kind: "refused" });
    await expect(d.resolve(`guarded.test:${FED}`)).rejects.toMatchObject({ kind: "refused" });
    expect(wk.connections).toBe(0);
    expect(s.connections).toBe(0);
    // The same setup with loopback allowed connects to both.
    const r = await discovery().resolve("guarded.test");
    expect(await call(r)).toBe("guarded");
    expect(wk.connections).toBe(1);
  });

  it("drops blocked addresses and keeps the allowed ones", async () => {
    dns.setA("mixed.test", "10.0.0.1", "127.0.1.41");
    dns.setAAAA("mixed.test", "fe80::1", "::1");
    const r = await discovery({ allowCidrs: parseCidrList("127.0.0.0/8") }).resolve("mixed.test:8448");
    expect(r.targets).toEqual([{ address: "127.0.1.41", port: 8448 }]);
    expect(r.steps.join("\n")).toMatch(/refused private address\(es\) 10\.0\.0\.1, fe80::1, ::1/);
  });

  it("checks the IPv4 inside IPv4-mapped IPv6 addresses", async () => {
    dns.setAAAA("mapped.test", "::ffff:7f00:12a"); // dns2 cannot encode the dotted form
    await expect(discovery({ allowCidrs: [] }).resolve("mapped.test:8448")).rejects.toMatchObject({ kind: "refused" });
    await expect(discovery({ allowCidrs: [] }).resolve("[::ffff:127.0.1.42]:8448")).rejects.toMatchObject({
      kind: "refused",
    });
    await expect(discovery({ allowCidrs: [] }).resolve("[::ffff:7f00:12a]")).rejects.toMatchObject({ kind: "refused" });
    const r = await discovery({ allowCidrs: parseCidrList("127.0.0.0/8") }).resolve("mapped.test:8448");
    expect(r.targets).toHaveLength(1);
    expect(r.targets[0]?.address).toMatch(/^::ffff:(127\.0\.1\.42|7f00:12a)$/);
  });

  it("applies to SRV targets and delegated names", async () => {
    dns.touch("srv-private.test");
    dns.setA("private-target.test", "192.168.77.1");
    dns.setSrv("_matrix-fed._tcp.srv-private.test", { target: "private-target.test", port: 8448 });
    await expect(discovery().resolve("srv-private.test")).rejects.toMatchObject({ kind: "refused" });
    dns.setA("wk-private.test", "127.0.1.43");
    await wellKnown("wk-private.test", "127.0.1.43", { "m.server": "169.254.169.254:80" });
    await expect(discovery().resolve("wk-private.test")).rejects.toMatchObject({ kind: "refused" });
  });
});

describe("server names", () => {
  it.each([
    "",
    "a..b",
    ".a",
    "a.",
    "example.test:0",
    "example.test:65536",
    "example.test:",
    "ex ample.test",
    "[::1",
    "[127.0.0.1]",
    "a:b:c",
    "exa_mple.test",
    "[::1]:x",
  ])("rejects %j as invalid", async (name) => {
    await expect(discovery().resolve(name)).rejects.toMatchObject({ kind: "invalid" });
  });
});

describe("DNS resolver", () => {
  it("answers A, AAAA and SRV from the configured server and port; [] for NXDOMAIN and NODATA", async () => {
    dns.setA("dual.test", "127.0.1.50");
    dns.setAAAA("dual.test", "::1");
    dns.setSrv("_matrix-fed._tcp.dual.test", { target: "dual.test", port: 8449, priority: 5, weight: 7 });
    dns.touch("empty.test");
    const r = createResolver({ dnsServer: dns.address, timeoutMs: 2000 });
    expect(await r.addresses("dual.test")).toEqual(["127.0.1.50", "::1"]);
    expect(await r.srv("_matrix-fed._tcp.dual.test")).toEqual([
      { name: "dual.test", port: 8449, priority: 5, weight: 7 },
    ]);
    expect(await r.addresses("missing.test")).toEqual([]);
    expect(await r.srv("_matrix-fed._tcp.missing.test")).toEqual([]);
    expect(await r.addresses("empty.test")).toEqual([]);
    expect(await r.srv("empty.test")).toEqual([]);
  });

  it("fails with a transport error when the server does not answer", async () => {
    const { createSocket } = await import("node:dgram");
    const silent = createSocket("udp4");
    await new Promise<void>((r) => silent.bind(0, "127.0.0.1", () => r()));
    try {
      const r = createResolver({ dnsServer: `127.0.0.1:${silent.address().port}`, timeoutMs: 300 });
      await expect(r.addresses("dual.test")).rejects.toMatchObject({ kind: "transport" });
      await expect(r.srv("_matrix-fed._tcp.dual.test")).rejects.toMatchObject({ kind: "transport" });
    } finally {
      silent.close();
    }
  });

  it("rejects a malformed --dns-server value", () => {
    expect(() => createResolver({ dnsServer: "dns.example:53" })).toThrow(/dns\.example:53/);
    expect(() => createResolver({ dnsServer: "127.0.0.1:99999" })).toThrow(/invalid DNS server/);
  });
});
