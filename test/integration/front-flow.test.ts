// The Bun front end's flow control and connection lifetimes, driven directly (startFront): a
// slow client stalls the homeserver instead of filling memory, idle keep-alive connections
// close while a silent request in flight does not, TLS to the homeserver is verified, and a
// drain lets the request in flight finish. Bun only.
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createLogger } from "../../src/observe/log.ts";
import { createAccessLog } from "../../src/engine/bun/access-log.ts";
import { appHop, homeserverHop } from "../../src/engine/bun/hop.ts";
import { type Front, startFront } from "../../src/engine/bun/server.ts";
import type { SyncGate } from "../../src/engine/bun/sync-gate.ts";
import { type Spliced, SyncSplice } from "../../src/delivery/json/sync-splice.ts";
import { RawClient } from "../helpers/raw-http1.ts";
import { createTestCa, startHttpsServer, type TestCa } from "../helpers/tls.ts";

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";

function bareFront(
  upstream: string,
  o: { idleSeconds?: number; ca?: string; headerTimeoutMs?: number; syncGate?: SyncGate } = {},
): { front: Front; port: number } {
  const trusted = () => false;
  const front = startFront({
    listen: "127.0.0.1:0",
    homeserver: homeserverHop({
      upstream: new URL(upstream),
      headerTimeoutMs: o.headerTimeoutMs ?? 10_000,
      trusted,
      ca: o.ca,
    }),
    app: appHop({ destination: { unix: "/nonexistent/app.sock" }, secret: "s", defaultHost: "hs.test" }),
    intercepts: (_m, path) => (o.syncGate && path === "/_matrix/client/v3/sync" ? "sync" : false),
    syncGate: o.syncGate,
    access: createAccessLog({ log: createLogger("error", () => {}), trusted }),
    idleSeconds: o.idleSeconds,
  });
  return { front, port: Number(front.address.split(":").pop()) };
}

async function listen(handler: http.RequestListener): Promise<{ server: http.Server; url: string }> {
  const server = http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}` };
}

const stop = (s: http.Server) =>
  new Promise<void>((r) => {
    s.closeAllConnections();
    s.close(() => r());
  });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(!isBun)("front end flow control", () => {
  test("a 50 MB body to a client that does not read stalls the homeserver's writes", { timeout: 60_000 }, async () => {
    const TOTAL = 50 * 1024 * 1024;
    const CHUNK = Buffer.alloc(256 * 1024, 0x61);
    let written = 0;
    let waitingForDrain = false;
    let finished = false;
    const { server, url } = await listen((_req, res) => {
      res.writeHead(200, { "content-length": String(TOTAL) });
      const pump = () => {
        while (written < TOTAL) {
          written += CHUNK.length;
          if (!res.write(CHUNK)) {
            waitingForDrain = true;
            res.once("drain", () => {
              waitingForDrain = false;
              pump();
            });
            return;
          }
        }
        res.end(() => (finished = true));
      };
      pump();
    });
    const { front, port } = bareFront(url);
    try {
      const sock = net.connect(port, "127.0.0.1");
      await new Promise((r) => sock.once("connect", r));
      sock.pause(); // read nothing
      sock.write("GET /big HTTP/1.1\r\nHost: hs.test\r\n\r\n");
      await sleep(1500);
      const stalledAt = written;
      await sleep(1000);
      // Socket buffers on the way hold a few MB; the rest must still be with the homeserver.
      expect(waitingForDrain).toBe(true);
      expect(written).toBe(stalledAt);
      expect(written).toBeLessThan(TOTAL * 0.6);
      let received = 0;
      sock.on("data", (c: Buffer) => (received += c.length));
      sock.resume();
      await expect.poll(() => finished && received >= TOTAL, { timeout: 30_000 }).toBe(true);
      sock.destroy();
    } finally {
      front.closeAllConnections();
      await stop(server);
    }
  });

  test("a request body from a client faster than the homeserver reads stalls the client", {
    timeout: 60_000,
  }, async () => {
    let upstreamReq: http.IncomingMessage | undefined;
    const { server, url } = await listen((req) => {
      upstreamReq = req;
      req.pause(); // read nothing yet
    });
    const { front, port } = bareFront(url);
    try {
      const sock = net.connect(port, "127.0.0.1");
      await new Promise((r) => sock.once("connect", r));
      sock.write(`POST /upload HTTP/1.1\r\nHost: hs.test\r\nContent-Length: ${50 * 1024 * 1024}\r\n\r\n`);
      const chunk = Buffer.alloc(256 * 1024, 0x62);
      let sent = 0;
      let waiting = false;
      const pump = () => {
        while (sent < 50 * 1024 * 1024) {
          sent += chunk.length;
          if (!sock.write(chunk)) {
            waiting = true;
            sock.once("drain", () => {
              waiting = false;
              pump();
            });
            return;
          }
        }
      };
      pump();
      await sleep(1500);
      const stalledAt = sent;
      await sleep(1000);
      // Kernel buffers on the way hold a few MB; then the front end stops reading from us.
      expect(waiting).toBe(true);
      expect(sent).toBe(stalledAt);
      expect(sent).toBeLessThan(30 * 1024 * 1024);
      expect(upstreamReq).toBeDefined();
      sock.destroy();
    } finally {
      front.closeAllConnections();
      await stop(server);
    }
  });
});

// The relay frees each read as soon as the kernel has taken all of it (flow.ts release). A read
// freed while any of it still waits in a queue would arrive short or zeroed: random bytes, a
// reader that stalls on and off so writes are partial and queued, compared by digest.
describe.skipIf(!isBun)("front end relays bytes intact while freeing what it has sent", () => {
  const SIZE = 24 * 1024 * 1024 + 12_345;
  const payload = randomBytes(SIZE);
  const digest = (b: Buffer) => createHash("sha256").update(b).digest("hex");

  /** Read a socket in fits, 40 ms reading and 40 ms paused, until the other side ends it. */
  function readInFits(sock: net.Socket): Promise<Buffer> {
    const parts: Buffer[] = [];
    return new Promise((resolve, reject) => {
      const t = setInterval(() => (sock.isPaused() ? sock.resume() : sock.pause()), 40);
      sock.on("data", (c: Buffer) => parts.push(c));
      sock.on("end", () => (clearInterval(t), resolve(Buffer.concat(parts))));
      sock.on("error", (e) => (clearInterval(t), reject(e)));
    });
  }

  test("a 24 MB response to a client that reads in fits", { timeout: 60_000 }, async () => {
    const { server, url } = await listen((_req, res) => {
      res.writeHead(200, { "content-length": String(SIZE) });
      res.end(payload);
    });
    const { front, port } = bareFront(url);
    try {
      const sock = net.connect(port, "127.0.0.1");
      await new Promise((r) => sock.once("connect", r));
      const all = readInFits(sock);
      // Connection: close, so the end of the connection marks the end of the response.
      sock.write("GET /big HTTP/1.1\r\nHost: hs.test\r\nConnection: close\r\n\r\n");
      const got = await all;
      const body = got.subarray(got.indexOf("\r\n\r\n") + 4);
      expect(body.length).toBe(SIZE);
      expect(digest(body)).toBe(digest(payload));
      sock.destroy();
    } finally {
      front.closeAllConnections();
      await stop(server);
    }
  });

  test("a 24 MB request body to a homeserver that reads in fits", { timeout: 60_000 }, async () => {
    let received: Promise<Buffer> | undefined;
    const { server, url } = await listen((req, res) => {
      const parts: Buffer[] = [];
      const t = setInterval(() => (req.isPaused() ? req.resume() : req.pause()), 40);
      req.on("data", (c: Buffer) => parts.push(c));
      received = new Promise((resolve) =>
        req.on("end", () => (clearInterval(t), resolve(Buffer.concat(parts)), res.end("ok"))),
      );
    });
    const { front, port } = bareFront(url);
    try {
      const c = await RawClient.connect(port);
      c.write(`POST /upload HTTP/1.1\r\nHost: hs.test\r\nContent-Length: ${SIZE}\r\n\r\n`);
      for (let at = 0; at < SIZE; at += 1024 * 1024) c.write(payload.subarray(at, Math.min(SIZE, at + 1024 * 1024)));
      expect((await c.read({ timeoutMs: 50_000 })).body.toString()).toBe("ok");
      const body = await received!;
      expect(body.length).toBe(SIZE);
      expect(digest(body)).toBe(digest(payload));
      c.close();
    } finally {
      front.closeAllConnections();
      await stop(server);
    }
  });
});

// /sync injection streams through the same flow control (response.ts SplicedBody): a body the
// client takes in fits, with the homeserver's own device_lists between two large members, and
// none at all, comes out as the homeserver sent it with the user spliced in, and is booked.
describe.skipIf(!isBun)("front end splices a large /sync for a client that reads in fits", () => {
  const filler = (seed: number) =>
    JSON.stringify(Array.from({ length: 400 }, (_, i) => randomBytes(22_000 + ((seed + i) % 7)).toString("base64")));
  const [a, b] = [filler(1), filler(2)];
  const cases = [
    {
      name: "device_lists between two 12 MB members",
      body: `{"next_batch":"s9","rooms":${a},"device_lists":{"changed":["@a:x"]},"presence":${b}}`,
      spliced: `{"next_batch":"s9","rooms":${a},"device_lists":{"changed":["@a:x","@new:x"]},"presence":${b}}`,
    },
    {
      name: "no device_lists: added before the closing brace",
      body: `{"next_batch":"s9","rooms":${a},"presence":${b}}\n`,
      spliced: `{"next_batch":"s9","rooms":${a},"presence":${b},"device_lists":{"changed":["@new:x"]}}\n`,
    },
  ];

  test.each(cases)("$name", { timeout: 60_000 }, async ({ body, spliced }) => {
    const payload = Buffer.from(body);
    const { server, url } = await listen((_req, res) => {
      res.writeHead(200, { "content-type": "application/json", "content-length": String(payload.length) });
      res.end(payload);
    });
    let booked: Spliced | undefined;
    const syncGate: SyncGate = {
      plan: (head) => ({
        observes: false,
        observer: () => undefined,
        longPoll: undefined,
        inject: { target: head.target, splice: () => new SyncSplice(["@new:x"], "sync", (r) => (booked = r)) },
      }),
    };
    const { front, port } = bareFront(url, { syncGate });
    try {
      const c = await RawClient.connect(port);
      const t = setInterval(() => (c.socket.isPaused() ? c.socket.resume() : c.socket.pause()), 40);
      c.write("GET /_matrix/client/v3/sync?since=s8 HTTP/1.1\r\nHost: hs.test\r\n\r\n");
      const m = await c.read({ timeoutMs: 50_000 });
      clearInterval(t);
      c.close();
      expect(m.headers["transfer-encoding"]).toBe("chunked");
      expect(m.body.length).toBe(Buffer.byteLength(spliced));
      expect(createHash("sha256").update(m.body).digest("hex")).toBe(
        createHash("sha256").update(spliced).digest("hex"),
      );
      expect(booked).toEqual({ added: ["@new:x"], reported: body.includes("@a:x") ? ["@a:x"] : [], token: "s9" });
    } finally {
      front.closeAllConnections();
      await stop(server);
    }
  });
});

describe.skipIf(!isBun)("a /sync body's reader", () => {
  test("is made when the answer's head arrives, not while the poll is held; it sees every byte", async () => {
    const payload = Buffer.from(`{"next_batch":"s2","pad":"${"x".repeat(300_000)}"}`);
    let made = 0;
    let seen = 0;
    let ended = false;
    let arrived!: (acceptEncoding: string | undefined) => void;
    const held = new Promise<string | undefined>((r) => (arrived = r));
    let release!: () => void;
    const upstream = await listen((req, res) => {
      // The poll is held here: the front end must not have made its reader yet.
      release = () => {
        res.writeHead(200, { "content-type": "application/json", "content-length": String(payload.length) });
        res.end(payload);
      };
      arrived(req.headers["accept-encoding"]);
    });
    const syncGate: SyncGate = {
      plan: () => ({
        observes: true,
        observer: () => {
          made++;
          return { data: (_b, s, e) => ((seen += e - s), false), end: () => void (ended = true) };
        },
        inject: undefined,
        longPoll: undefined,
      }),
    };
    const { front, port } = bareFront(upstream.url, { syncGate });
    try {
      const c = await RawClient.connect(port);
      c.write("GET /_matrix/client/v3/sync?since=s1&timeout=30000 HTTP/1.1\r\nHost: hs.test\r\n\r\n");
      expect(await held).toBe("identity");
      expect(made).toBe(0);
      release();
      const m = await c.read({ timeoutMs: 10_000 });
      c.close();
      expect(m.body.equals(payload)).toBe(true);
      expect([made, seen, ended]).toEqual([1, payload.length, true]);
    } finally {
      front.closeAllConnections();
      await stop(upstream.server);
    }
  });
});

describe.skipIf(!isBun)("front end connection lifetimes", () => {
  test("an idle keep-alive connection is closed; a silent request in flight is not", { timeout: 30_000 }, async () => {
    const { server, url } = await listen((req, res) => {
      if (req.url === "/slow") setTimeout(() => res.end("late"), 7000);
      else res.end("now");
    });
    const { front, port } = bareFront(url, { idleSeconds: 1 });
    try {
      const idle = await RawClient.connect(port);
      idle.write("GET /fast HTTP/1.1\r\nHost: hs.test\r\n\r\n");
      expect((await idle.read()).body.toString()).toBe("now");
      const busy = await RawClient.connect(port);
      busy.write("GET /slow HTTP/1.1\r\nHost: hs.test\r\n\r\n");
      await idle.waitClosed(10_000); // Bun's socket timers tick every few seconds
      expect(busy.closed).toBe(false);
      expect((await busy.read({ timeoutMs: 10_000 })).body.toString()).toBe("late");
      busy.close();
    } finally {
      front.closeAllConnections();
      await stop(server);
    }
  });

  test("close() refuses new connections and lets the request in flight finish", async () => {
    const { server, url } = await listen((_req, res) => void setTimeout(() => res.end("done"), 500));
    const { front, port } = bareFront(url);
    try {
      const c = await RawClient.connect(port);
      c.write("GET /x HTTP/1.1\r\nHost: hs.test\r\n\r\n");
      await sleep(100);
      let closed = false;
      front.close(() => (closed = true));
      await expect(RawClient.connect(port)).rejects.toThrow();
      const res = await c.read();
      expect(res.body.toString()).toBe("done");
      expect(res.headers.connection).toBe("close");
      await c.waitClosed();
      await expect.poll(() => closed).toBe(true);
    } finally {
      front.closeAllConnections();
      await stop(server);
    }
  });
});

describe.skipIf(!isBun)("front end TLS to the homeserver", () => {
  let ca: TestCa;
  beforeAll(() => {
    ca = createTestCa();
  });
  afterAll(() => ca.cleanup());

  test("an https homeserver is verified against the trusted CAs and the host name", async () => {
    const hs = await startHttpsServer({
      host: "127.0.0.1",
      cert: ca.issue("hs", ["IP:127.0.0.1"]),
      handler: (_req, res) => res.end("over tls"),
    });
    const wrongName = await startHttpsServer({
      host: "127.0.0.1",
      cert: ca.issue("other", ["DNS:other.test"]),
      handler: (_req, res) => res.end("x"),
    });
    const trusting = bareFront(`https://127.0.0.1:${hs.port}`, { ca: ca.caPem });
    const untrusting = bareFront(`https://127.0.0.1:${hs.port}`);
    const mismatched = bareFront(`https://127.0.0.1:${wrongName.port}`, { ca: ca.caPem });
    try {
      const get = async (port: number) => {
        const c = await RawClient.connect(port);
        c.write("GET /tls HTTP/1.1\r\nHost: hs.test\r\n\r\n");
        const r = await c.read();
        c.close();
        return r;
      };
      const good = await get(trusting.port);
      expect(good.status).toBe(200);
      expect(good.body.toString()).toBe("over tls");
      expect((await get(untrusting.port)).status).toBe(502);
      expect((await get(mismatched.port)).status).toBe(502);
    } finally {
      for (const f of [trusting, untrusting, mismatched]) f.front.closeAllConnections();
      await hs.close();
      await wrongName.close();
    }
  });
});
