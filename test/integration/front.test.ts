// The Bun front end (src/engine/bun/) at the byte level: framing both ways, pipelining,
// interim responses, HTTP/1.0, refusals, the stale-connection retry, and who the app thinks the
// client is. Bun only (Deno always runs the node:http engine).
import net from "node:net";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { stripHopByHop } from "../../src/http/upstream.ts";
import { HOP_BY_HOP, NAMES } from "../../src/engine/bun/names.ts";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { startTestProxy, testConfig } from "../helpers/proxy.ts";
import { startProxy } from "../../src/commands/serve.ts";
import { RawClient, type RawUpstream, startRawUpstream } from "../helpers/raw-http1.ts";

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
type Proxy = Awaited<ReturnType<typeof startTestProxy>>;

const ok = (body: string, extra = "") =>
  `HTTP/1.1 200 OK\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;

describe.skipIf(!isBun)("the Bun front end, byte level", () => {
  let up: RawUpstream;
  let proxy: Proxy;
  // Per path: how the raw upstream answers. Default: 200 echoing the request body.
  const answers = new Map<string, (req: RawUpstream["requests"][number], s: import("node:net").Socket) => void>();
  const pathOf = (head: string) => head.split(" ")[1]!.split("?")[0]!;

  beforeAll(async () => {
    up = await startRawUpstream((req, s) => {
      const answer = answers.get(pathOf(req.head));
      if (answer) return answer(req, s);
      s.write(ok(req.body.toString("latin1")));
    });
    proxy = await startTestProxy(up.url, ["--upstream-header-timeout-ms", "3000"], "bun");
  });
  afterAll(async () => {
    await proxy.close();
    await up.close();
  });

  const client = () => RawClient.connect(proxy.port);
  const last = () => up.requests[up.requests.length - 1]!;

  test("auto picks the front end under Bun; --engine node keeps node:http", async () => {
    expect(proxy.engine).toBe("bun");
    const node = await startTestProxy(up.url, [], "node");
    try {
      expect(node.engine).toBe("node");
    } finally {
      await node.close();
    }
  });

  test("a chunked request body reaches the homeserver verbatim, with Transfer-Encoding: chunked", async () => {
    const c = await client();
    const body = "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n";
    c.write(`POST /chunked-in HTTP/1.1\r\nHost: hs.test\r\nTransfer-Encoding: chunked\r\n\r\n${body}`);
    const res = await c.read();
    expect(res.status).toBe(200);
    expect(last().headers["transfer-encoding"]).toBe("chunked");
    expect(last().raw.toString("latin1")).toBe(body);
    expect(res.body.toString()).toBe("hello world");
    c.close();
  });

  test("a chunked response reaches an HTTP/1.1 client verbatim, and an HTTP/1.0 client de-chunked", async () => {
    const body = "3;note=x\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n";
    answers.set("/chunked-out", (_r, s) => s.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${body}`));
    const c11 = await client();
    c11.write("GET /chunked-out HTTP/1.1\r\nHost: hs.test\r\n\r\n");
    const r11 = await c11.read();
    expect(r11.headers["transfer-encoding"]).toBe("chunked");
    expect(r11.raw.toString("latin1")).toBe(body);
    c11.close();

    const c10 = await client();
    c10.write("GET /chunked-out HTTP/1.0\r\n\r\n");
    await c10.waitClosed(); // no length to delimit the de-chunked body: the connection does
    const r10 = await c10.read();
    expect(r10.headers["transfer-encoding"]).toBeUndefined();
    expect(r10.headers.connection).toBe("close");
    expect(r10.body.toString()).toBe("abcdefg");
  });

  test("pipelined requests are answered in order on one connection", async () => {
    answers.set("/slow-first", (_r, s) => void setTimeout(() => s.write(ok("first")), 300));
    const c = await client();
    c.write(
      "GET /slow-first HTTP/1.1\r\nHost: hs.test\r\n\r\nPOST /second HTTP/1.1\r\nHost: hs.test\r\nContent-Length: 6\r\n\r\nsecondGET /third HTTP/1.1\r\nHost: hs.test\r\n\r\n",
    );
    expect((await c.read()).body.toString()).toBe("first");
    expect((await c.read()).body.toString()).toBe("second");
    expect((await c.read()).body.toString()).toBe("");
    expect(c.closed).toBe(false);
    c.close();
  });

  test("HEAD, 204 and 304 answers have no body and the connection carries on", async () => {
    answers.set("/head", (_r, s) => s.write("HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"));
    answers.set("/nothing", (_r, s) => s.write("HTTP/1.1 204 No Content\r\n\r\n"));
    answers.set("/unchanged", (_r, s) => s.write('HTTP/1.1 304 Not Modified\r\netag: "x"\r\n\r\n'));
    const c = await client();
    c.write("HEAD /head HTTP/1.1\r\nHost: hs.test\r\n\r\n");
    const head = await c.read({ noBody: true });
    expect(head.headers["content-length"]).toBe("1234");
    for (const path of ["/nothing", "/unchanged"]) {
      c.write(`GET ${path} HTTP/1.1\r\nHost: hs.test\r\n\r\n`);
      expect((await c.read()).raw.length).toBe(0);
    }
    c.write("GET /after HTTP/1.1\r\nHost: hs.test\r\n\r\n");
    expect((await c.read()).status).toBe(200);
    c.close();
  });

  test("HTTP/1.0: no Host needed; keep-alive only when asked for", async () => {
    const c = await client();
    c.write("GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    const r1 = await c.read();
    expect(r1.status).toBe(200);
    expect(r1.headers.connection).toBe("keep-alive");
    expect(last().headers.host).toBe(`127.0.0.1:${up.port}`);
    expect(last().head.startsWith("GET /old HTTP/1.1\r\n")).toBe(true); // we speak our own version upstream
    c.write("GET /old2 HTTP/1.0\r\n\r\n");
    const r2 = await c.read();
    expect(r2.headers.connection).toBe("close");
    await c.waitClosed();
  });

  test.each([
    ["a request head over 64 KiB", 431, `GET /big HTTP/1.1\r\nHost: hs.test\r\nX-Big: ${"a".repeat(70_000)}\r\n\r\n`],
    ["a malformed request line", 400, "GET /a b HTTP/1.1\r\nHost: hs.test\r\n\r\n"],
    ["whitespace before a colon", 400, "GET / HTTP/1.1\r\nHost : hs.test\r\n\r\n"],
    ["an obs-fold line", 400, "GET / HTTP/1.1\r\nHost: hs.test\r\nX-A: 1\r\n  continued\r\n\r\n"],
    ["an HTTP/1.1 request without Host", 400, "GET / HTTP/1.1\r\n\r\n"],
    ["bare LF line endings", 400, "GET / HTTP/1.1\nHost: hs.test\n\n"],
    [
      "Content-Length with Transfer-Encoding (smuggling)",
      400,
      "POST /smuggle HTTP/1.1\r\nHost: hs.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: hs.test\r\n\r\n",
    ],
    [
      "two different Content-Lengths",
      400,
      "POST /cl HTTP/1.1\r\nHost: hs.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ],
    ["an unknown transfer coding", 501, "POST /te HTTP/1.1\r\nHost: hs.test\r\nTransfer-Encoding: gzip\r\n\r\n"],
  ])("%s is refused (%i), closes the connection and never reaches the homeserver", async (_what, status, request) => {
    const before = up.requests.length;
    const c = await client();
    c.write(request);
    const res = await c.read();
    expect(res.status).toBe(status);
    expect(res.headers["access-control-allow-origin"]).toBe("*");
    expect(JSON.parse(res.body.toString()).errcode).toBe("M_UNKNOWN");
    await c.waitClosed();
    expect(up.requests.length).toBe(before);
  });

  test("a response without a length is read until the homeserver closes", async () => {
    answers.set("/until-close", (_r, s) => {
      s.write("HTTP/1.1 200 OK\r\n\r\npart one, ");
      setTimeout(() => s.end("part two"), 100);
    });
    const c = await client();
    c.write("GET /until-close HTTP/1.1\r\nHost: hs.test\r\n\r\n");
    await c.waitClosed();
    const res = await c.read();
    expect(res.headers.connection).toBe("close");
    expect(res.body.toString()).toBe("part one, part two");
  });

  test("a pooled connection the homeserver closes before answering: an idempotent request is sent again, a POST is not", async () => {
    // The homeserver drops every connection at its second request, as one that closed an idle
    // keep-alive connection just as we reused it.
    answers.set("/flaky", (req, s) => (req.index === 0 ? s.write(ok("fresh")) : s.destroy()));
    const c = await client();
    c.write("GET /flaky HTTP/1.1\r\nHost: hs.test\r\n\r\n");
    expect((await c.read()).body.toString()).toBe("fresh");
    c.write("GET /flaky HTTP/1.1\r\nHost: hs.test\r\n\r\n");
    const retried = await c.read();
    expect(retried.status).toBe(200);
    expect(retried.body.toString()).toBe("fresh");
    c.write("POST /flaky HTTP/1.1\r\nHost: hs.test\r\nContent-Length: 2\r\n\r\nhi");
    const posted = await c.read();
    expect(posted.status).toBe(502);
    expect(up.requests.filter((r) => r.head.startsWith("POST /flaky")).length).toBe(1);
    c.close();
  });

  test("a 502 of our own to an HTTP/1.0 client that asked for keep-alive says keep-alive, and the connection carries on", async () => {
    answers.set("/gone", (_req, s) => s.destroy());
    const c = await client();
    c.write("POST /gone HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi");
    const res = await c.read();
    expect(res.status).toBe(502);
    expect(res.headers.connection).toBe("keep-alive"); // without it an HTTP/1.0 client waits for a close
    c.write("GET /after HTTP/1.0\r\n\r\n");
    expect((await c.read()).status).toBe(200);
    await c.waitClosed();
  });

  test("hop-by-hop names: the front end drops exactly what stripHopByHop drops", () => {
    const probe = Object.fromEntries(NAMES.filter(Boolean).map((n) => [n, "x"]));
    const kept = stripHopByHop(probe);
    NAMES.forEach((n, id) => {
      if (n) expect(HOP_BY_HOP[id], n).toBe(!(n in kept));
    });
    for (const n of [
      "connection",
      "keep-alive",
      "proxy-connection",
      "te",
      "trailer",
      "transfer-encoding",
      "upgrade",
      "proxy-authorization",
      "proxy-authenticate",
    ])
      expect(HOP_BY_HOP[NAMES.indexOf(n)], n).toBe(true);
  });
});

describe.skipIf(!isBun)("the Bun front end and the app behind it", () => {
  let hs: FakeHomeserver;
  beforeAll(async () => {
    hs = await startFakeHomeserver();
  });
  afterAll(async () => {
    await hs.close();
  });

  test("intercepted requests reach the app as from the real client; no client can claim another address", async () => {
    const p = await startTestProxy(hs.url, [], "bun");
    try {
      const c = await RawClient.connect(p.port);
      c.write(
        "GET /_matrix/client/versions HTTP/1.1\r\nHost: client.example\r\nX-Resync-Peer: 203.0.113.7\r\nX-Resync-Front: guess\r\n\r\n",
      );
      const res = await c.read();
      expect(JSON.parse(res.body.toString()).unstable_features["org.matrix.msc2638"]).toBe(true);
      // Found by path: the proxy's own start-up calls (its key check) may reach the homeserver too.
      const seen = hs.seen.filter((r) => r.target === "/_matrix/client/versions").at(-1)!;
      expect(seen.headers["x-forwarded-for"]).toBe("127.0.0.1");
      expect(seen.headers["x-forwarded-host"]).toBe("client.example");
      expect(seen.headers["x-resync-peer"]).toBeUndefined();
      expect(seen.headers["x-resync-front"]).toBeUndefined();
      c.write(
        "GET /_matrix/client/v3/pushrules/ HTTP/1.1\r\nHost: client.example\r\nX-Resync-Peer: 203.0.113.7\r\n\r\n",
      );
      await c.read();
      expect(
        hs.seen.filter((r) => r.target === "/_matrix/client/v3/pushrules/").at(-1)!.headers["x-resync-peer"],
      ).toBeUndefined();
      c.close();
    } finally {
      await p.close();
    }
  });

  test("Expect: 100-continue: the homeserver's 100 reaches the client, which then sends its body", async () => {
    hs.on("/continue", (_req, res, body) => void res.end(`got ${body.toString()}`));
    const p = await startTestProxy(hs.url, [], "bun");
    try {
      const c = await RawClient.connect(p.port);
      c.write("PUT /continue HTTP/1.1\r\nHost: hs.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
      expect((await c.read()).status).toBe(100);
      c.write("data");
      const res = await c.read();
      expect(res.status).toBe(200);
      expect(res.body.toString()).toBe("got data");
      c.close();
    } finally {
      await p.close();
    }
  });

  test("the app believes a peer header only with the front end's secret (a local process cannot forge one)", async () => {
    const p = await startTestProxy(hs.url, [], "bun");
    try {
      const internal = p.server.address() as string; // the app's unix socket in --data-dir
      const sock = net.connect(internal);
      await new Promise((r) => sock.once("connect", r));
      const before = hs.seen.length;
      sock.write(
        "GET /_matrix/client/versions HTTP/1.1\r\nHost: hs.test\r\nX-Resync-Peer: 203.0.113.7\r\nX-Resync-Front: not-the-secret\r\nConnection: close\r\n\r\n",
      );
      await new Promise((r) => sock.on("close", r).resume());
      // Found by path: the proxy's own start-up calls (its key check) may reach the homeserver too.
      const seen = hs.seen.slice(before).find((r) => r.target === "/_matrix/client/versions")!;
      expect(seen.headers["x-forwarded-for"]).not.toContain("203.0.113.7");
      expect(seen.headers["x-resync-peer"]).toBeUndefined();
      expect(seen.headers["x-resync-front"]).toBeUndefined();
    } finally {
      await p.close();
    }
  });

  test("behind a trusted proxy, the app extends X-Forwarded-For with the real peer", async () => {
    const p = await startTestProxy(hs.url, ["--trusted-proxies", "loopback"], "bun");
    try {
      await fetch(`${p.url}/_matrix/client/versions`, { headers: { "x-forwarded-for": "198.51.100.4" } });
      expect(hs.seen.filter((r) => r.target === "/_matrix/client/versions").at(-1)!.headers["x-forwarded-for"]).toBe(
        "198.51.100.4, 127.0.0.1",
      );
    } finally {
      await p.close();
    }
  });
});

describe.skipIf(isBun)("off Bun", () => {
  test("--engine bun is refused, naming the flag; auto falls back to node:http", async () => {
    await expect(startProxy(testConfig("http://127.0.0.1:9", [], "bun"))).rejects.toThrow(/--engine bun/);
    const p = await startTestProxy("http://127.0.0.1:9", [], "auto");
    try {
      expect(p.engine).toBe("node");
    } finally {
      await p.close();
    }
  });
});
