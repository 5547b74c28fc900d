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
import { startDnsServer, type TestDnsServer } from "../helpers/dns-server.ts";
import { createTestCa, json, startHttpsServer, type TestCa, type TestHandler, type TestHttpsServer } from "../helpers/tls.ts";

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
    allowCidrs: LOOPBACK, ca: [ca.caPem], wellKnownPort: WK, defaultPort: FED, wellKnownTimeoutMs: 3000, ...extra,
  });
}

/** Make the request a client would make against the first target; returns the answering server's id. */
async function call(r: ResolvedServer): Promise<string> {
  const t = r.targets[0]!;
  const res = await httpsRequest({
    address: t.address, port: t.port, tlsServerName: r.tlsServerName, hostHeader: r.hostHeader,
    method: "GET", path: "/_matrix/federation/v1/version", ca: [ca.caPem], timeoutMs: 5000, maxBytes: 65536,
  });
  return (JSON.parse(Buffer.from(res.body).toString()) as { id: string }).id;
}

describe("step 1: IP literals", () => {
  it("uses the IP and port, Host = server name, no SNI, certificate checked against the IP", async () => {
    const s = await fedServer("127.0.1.1", ["IP:127.0.1.1"], "ip");
    const name = `127.0.1.1:${s.port}`;
    const r = await discovery().resolve(name);
    expect(r).toMatchObject({ serverName: name, hostHeader: name, tlsServerName: null, targets: [{ address: "127.0.1.1", port: s.port }] });
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
    expect(r).toMatchObject({ hostHeader: name, tlsServerName: "explicit.test", targets: [{ address: "127.0.1.3", port: s.port }] });
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
    expect(wk.requests[0]).toMatchObject({ url: "/.well-known/matrix/server", host: "wk-ip.test", servername: "wk-ip.test" });
    expect(s.requests[0]).toMatchObject({ servername: null });
  });

  it("3.2 delegates with an explicit port; the certificate only names the delegated host", async () => {
    dns.setA("wk-port.test", "127.0.1.6");
    dns.setA("deleg-port.test", "127.0.1.7");
    const s = await fedServer("127.0.1.7", ["DNS:deleg-port.test"], "deleg-port");
    await wellKnown("wk-port.test", "127.0.1.6", { "m.server": `deleg-port.test:${s.port}` });
    const r = await discovery().resolve("wk-port.test");
    expect(r).toMatchObject({ hostHeader: `deleg-port.test:${s.port}`, tlsServerName: "deleg-port.test", targets: [{ address: "127.0.1.7", port: s.port }] });
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
    expect(r).toMatchObject({ hostHeader: "deleg-srv.test", tlsServerName: "deleg-srv.test", targets: [{ address: "127.0.1.9", port: s.port }] });
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
    expect(r).toMatchObject({ hostHeader: "deleg-8448.test", tlsServerName: "deleg-8448.test", targets: [{ address: "127.0.1.13", port: FED }] });
    expect(await call(r)).toBe("deleg-8448");
    expect(s.requests[0]?.host).toBe("deleg-8448.test");
  });
});
