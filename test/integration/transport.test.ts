// Federation transport over real sockets on 127.0.2.x: pooling, per-destination limits,
// target fallback, timeouts, response caps, extra CA trust, raw request targets.
import type { ServerResponse } from "node:http";
import { createServer as createTcpServer, type Server, type Socket } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createDiscovery, type ResolvedServer } from "../../src/federation/discovery.ts";
import { createResolver } from "../../src/federation/dns.ts";
import { createTransport } from "../../src/federation/transport.ts";
import { parseCidrList } from "../../src/federation/ip-guard.ts";
import { startDnsServer, type TestDnsServer } from "../helpers/dns-server.ts";
import {
  createTestCa,
  json,
  startHttpsServer,
  type TestCa,
  type TestHandler,
  type TestHttpsServer,
} from "../helpers/tls.ts";

let ca: TestCa;
let otherCa: TestCa;
let dns: TestDnsServer;
const cleanups: (() => unknown)[] = [];

beforeAll(async () => {
  ca = createTestCa();
  otherCa = createTestCa("some other CA");
  dns = await startDnsServer();
});
afterAll(async () => {
  ca.cleanup();
  otherCa.cleanup();
  await dns.close();
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function serve(ip: string, name: string, handler: TestHandler, issuer: TestCa = ca): Promise<TestHttpsServer> {
  const s = await startHttpsServer({ host: ip, cert: issuer.issue(name, [`DNS:${name}`]), handler });
  cleanups.push(() => s.close());
  return s;
}

/** Discovery stub: `name` resolves to the given targets with Host and TLS name = name. */
function fixed(name: string, ...targets: { address: string; port: number }[]) {
  return {
    resolve: async (s: string): Promise<ResolvedServer> => ({
      serverName: s,
      hostHeader: name,
      tlsServerName: name,
      targets,
      steps: [],
    }),
  };
}

function transport(
  opts: Partial<Parameters<typeof createTransport>[0]> & Pick<Parameters<typeof createTransport>[0], "discovery">,
) {
  const t = createTransport({ ca: [ca.caPem], timeoutMs: 5000, ...opts });
  cleanups.push(() => t.close());
  return t;
}

const text = (b: Uint8Array): string => Buffer.from(b).toString("utf8");

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

describe("request basics", () => {
  it("sends method, raw path, headers and body as given; Host from discovery; returns any status", async () => {
    const s = await serve("127.0.2.1", "remote.test", json({ errcode: "M_NOT_FOUND" }, 404, { "x-extra": "1" }));
    const t = transport({ discovery: fixed("remote.test", { address: "127.0.2.1", port: s.port }) });
    const path = "/_matrix/federation/v1/user/devices/%40alice%3Aremote.test?x=%2F..%2f";
    const body = new TextEncoder().encode('{"a":1}');
    const res = await t.request("remote.test", {
      method: "POST",
      path,
      headers: { Authorization: 'X-Matrix origin="a"', "content-type": "application/json" },
      body,
    });
    expect(res.status).toBe(404);
    expect(res.headers["x-extra"]).toBe("1");
    expect(JSON.parse(text(res.body))).toEqual({ errcode: "M_NOT_FOUND" });
    const seen = s.requests[0]!;
    expect(seen).toMatchObject({ method: "POST", url: path, host: "remote.test", servername: "remote.test" });
    expect(seen.headers.authorization).toBe('X-Matrix origin="a"');
    expect(seen.headers["content-length"]).toBe("7");
    expect(seen.headers["user-agent"]).toBe("matrix-resync-proxy");
    expect(seen.body.toString()).toBe('{"a":1}');
  });

  it("reuses one keep-alive connection for sequential requests to a destination", async () => {
    const s = await serve("127.0.2.2", "pool.test", json({ ok: true }));
    const t = transport({ discovery: fixed("pool.test", { address: "127.0.2.2", port: s.port }) });
    for (let i = 0; i < 4; i++) {
      expect((await t.request("pool.test", { method: "GET", path: `/x/${i}` })).status).toBe(200);
    }
    expect(s.requests.map((r) => r.url)).toEqual(["/x/0", "/x/1", "/x/2", "/x/3"]);
    expect(s.connections).toBe(1);
  });

  it("opens a new connection when the server has closed the idle one", async () => {
    const s = await serve("127.0.2.17", "idleclose.test", (_req, res) => {
      const socket = res.socket;
      res.on("finish", () => setTimeout(() => socket?.destroy(), 20));
      res.end("ok");
    });
    const t = transport({ discovery: fixed("idleclose.test", { address: "127.0.2.17", port: s.port }) });
    for (let i = 0; i < 3; i++) {
      expect(text((await t.request("idleclose.test", { method: "GET", path: "/" })).body)).toBe("ok");
      await until(() => s.connections === i + 1 && s.openSockets === 0);
    }
    expect(s.connections).toBe(3);
  });
});

describe("per-destination concurrency", () => {
  it("keeps at most 3 requests in flight per destination and queues the rest", async () => {
    const held: ServerResponse[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    const s = await serve("127.0.2.3", "busy.test", (req, res) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      res.on("finish", () => inFlight--);
      held.push(res);
    });
    const other = await serve("127.0.2.4", "idle.test", json({ ok: true }));
    const busy = fixed("busy.test", { address: "127.0.2.3", port: s.port });
    const idle = fixed("idle.test", { address: "127.0.2.4", port: other.port });
    const t = transport({ discovery: { resolve: (n) => (n === "busy.test" ? busy : idle).resolve(n) } });
    const all = Array.from({ length: 7 }, (_, i) => t.request("busy.test", { method: "GET", path: `/q/${i}` }));
    await until(() => held.length === 3);
    // Another destination is not held up by the queue of the first one.
    expect((await t.request("idle.test", { method: "GET", path: "/" })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 100));
    expect(held.length).toBe(3);
    let answered = 0;
    while (answered < 7) {
      await until(() => held.length > answered);
      held[answered++]!.end("done");
    }
    const results = await Promise.all(all);
    expect(results.map((r) => text(r.body))).toEqual(Array(7).fill("done"));
    expect(maxInFlight).toBe(3);
    expect(s.connections).toBeLessThanOrEqual(3);
  });

  it("honours a different maxPerDestination", async () => {
    const held: ServerResponse[] = [];
    const s = await serve("127.0.2.5", "one.test", (_req, res) => void held.push(res));
    const t = transport({ discovery: fixed("one.test", { address: "127.0.2.5", port: s.port }), maxPerDestination: 1 });
    const all = [0, 1, 2].map(() => t.request("one.test", { method: "GET", path: "/" }));
    await until(() => held.length === 1);
    await new Promise((r) => setTimeout(r, 100));
    expect(held.length).toBe(1);
    for (let i = 0; i < 3; i++) {
      await until(() => held.length > i);
      held[i]!.end("ok");
    }
    expect((await Promise.all(all)).map((r) => r.status)).toEqual([200, 200, 200]);
  });
});

/** A port on `ip` where nothing listens: bind, note the port, close. */
async function closedPort(ip: string): Promise<number> {
  const s = createTcpServer();
  await new Promise<void>((r) => s.listen(0, ip, () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe("targets", () => {
  it("tries the targets in order and moves on when one refuses the connection", async () => {
    const dead = await closedPort("127.0.2.6");
    const good = await serve("127.0.2.7", "multi.test", json({ from: "second" }));
    const unused = await serve("127.0.2.8", "multi.test", json({ from: "third" }));
    const t = transport({
      discovery: fixed(
        "multi.test",
        { address: "127.0.2.6", port: dead },
        { address: "127.0.2.7", port: good.port },
        { address: "127.0.2.8", port: unused.port },
      ),
    });
    const res = await t.request("multi.test", { method: "GET", path: "/" });
    expect(JSON.parse(text(res.body))).toEqual({ from: "second" });
    expect(unused.connections).toBe(0);
  });

  it("reports a transport error when every target fails", async () => {
    const t = transport({
      discovery: fixed("gone.test", { address: "127.0.2.6", port: await closedPort("127.0.2.6") }),
    });
    await expect(t.request("gone.test", { method: "GET", path: "/" })).rejects.toMatchObject({
      kind: "transport",
      message: expect.stringMatching(/ECONNREFUSED/),
    });
  });

  it("resolves through real discovery (SRV with two targets, the first one dead)", async () => {
    dns.touch("srv2.test");
    dns.setA("dead.srv2.test", "127.0.2.9");
    dns.setA("live.srv2.test", "127.0.2.10");
    const live = await serve("127.0.2.10", "srv2.test", json({ ok: "live" }));
    dns.setSrv(
      "_matrix-fed._tcp.srv2.test",
      { target: "dead.srv2.test", port: await closedPort("127.0.2.9"), priority: 1 },
      { target: "live.srv2.test", port: live.port, priority: 2 },
    );
    const discovery = createDiscovery({
      resolver: createResolver({ dnsServer: dns.address }),
      allowCidrs: parseCidrList("127.0.0.0/8"),
      ca: [ca.caPem],
      wellKnownPort: await closedPort("127.0.2.10"),
    });
    const t = transport({ discovery });
    const res = await t.request("srv2.test", { method: "GET", path: "/_matrix/key/v2/server" });
    expect(JSON.parse(text(res.body))).toEqual({ ok: "live" });
    expect(live.requests[0]).toMatchObject({ host: "srv2.test", servername: "srv2.test" });
  });

  it("passes the guard's refusal through without connecting", async () => {
    const s = await serve("127.0.2.11", "private.test", json({}));
    const discovery = createDiscovery({ resolver: createResolver({ dnsServer: dns.address }), allowCidrs: [] });
    const t = transport({ discovery });
    await expect(t.request(`127.0.2.11:${s.port}`, { method: "GET", path: "/" })).rejects.toMatchObject({
      kind: "refused",
    });
    expect(s.connections).toBe(0);
  });
});

describe("limits", () => {
  it("gives up on a server that never answers after the total timeout", async () => {
    const s = await serve("127.0.2.12", "hang.test", () => {});
    const t = transport({ discovery: fixed("hang.test", { address: "127.0.2.12", port: s.port }), timeoutMs: 300 });
    await expect(t.request("hang.test", { method: "GET", path: "/" })).rejects.toMatchObject({ kind: "timeout" });
    expect(s.requests.length).toBe(1);
  });

  it("times out on a server that accepts TCP but never speaks TLS", async () => {
    const sockets: Socket[] = [];
    const silent: Server = createTcpServer((c) => void sockets.push(c));
    await new Promise<void>((r) => silent.listen(0, "127.0.2.13", () => r()));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          for (const c of sockets) c.destroy();
          silent.close(() => r());
        }),
    );
    const t = transport({
      discovery: fixed("mute.test", { address: "127.0.2.13", port: (silent.address() as { port: number }).port }),
      timeoutMs: 300,
    });
    await expect(t.request("mute.test", { method: "GET", path: "/" })).rejects.toMatchObject({ kind: "timeout" });
    expect(sockets.length).toBe(1);
  });

  it("rejects an answer larger than maxBytes, with or without Content-Length", async () => {
    const big = "x".repeat(5000);
    const s = await serve("127.0.2.14", "big.test", (req, res) => {
      if (req.url === "/declared") res.writeHead(200, { "content-length": big.length }).end(big);
      else if (req.url === "/chunked") {
        res.writeHead(200);
        res.write(big.slice(0, 2500));
        setTimeout(() => res.end(big.slice(2500)), 10);
      } else res.end("small");
    });
    const t = transport({ discovery: fixed("big.test", { address: "127.0.2.14", port: s.port }), maxBytes: 1000 });
    await expect(t.request("big.test", { method: "GET", path: "/declared" })).rejects.toMatchObject({
      kind: "too_large",
      status: 200,
    });
    const e2 = await t.request("big.test", { method: "GET", path: "/chunked" }).catch((e: unknown) => e);
    expect(e2, String(e2)).toMatchObject({ kind: "too_large" });
    expect(text((await t.request("big.test", { method: "GET", path: "/small" })).body)).toBe("small");
  });
});

describe("federation CA trust", () => {
  it("trusts the extra CA only when configured", async () => {
    const s = await serve("127.0.2.15", "ca.test", json({ ok: true }));
    const plain = transport({ discovery: fixed("ca.test", { address: "127.0.2.15", port: s.port }), ca: [] });
    await expect(plain.request("ca.test", { method: "GET", path: "/" })).rejects.toMatchObject({
      kind: "transport",
      message: expect.stringMatching(/certificate|UNABLE_TO_VERIFY|self.signed/i),
    });
    const trusting = transport({ discovery: fixed("ca.test", { address: "127.0.2.15", port: s.port }) });
    expect((await trusting.request("ca.test", { method: "GET", path: "/" })).status).toBe(200);
  });

  it("rejects a certificate from an unknown CA even with an extra CA configured", async () => {
    const s = await serve("127.0.2.16", "rogue.test", json({ ok: true }), otherCa);
    const t = transport({ discovery: fixed("rogue.test", { address: "127.0.2.16", port: s.port }) });
    await expect(t.request("rogue.test", { method: "GET", path: "/" })).rejects.toMatchObject({ kind: "transport" });
    expect(s.requests.length).toBe(0);
  });
});
