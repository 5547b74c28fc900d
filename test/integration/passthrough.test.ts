import http from "node:http";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { startTestProxy } from "../helpers/proxy.ts";
import { rawRequest } from "../helpers/raw-http.ts";

let hs: FakeHomeserver;
let proxy: Awaited<ReturnType<typeof startTestProxy>>;

beforeAll(async () => {
  hs = await startFakeHomeserver();
  proxy = await startTestProxy(hs.url, ["--upstream-header-timeout-ms", "1500"]);
});
afterAll(async () => {
  await proxy.close();
  await hs.close();
});

const lastSeen = () => hs.seen[hs.seen.length - 1]!;
const get = (path: string, headers: Record<string, string> = {}) =>
  fetch(proxy.url + path, { headers, redirect: "manual" });

describe("raw request target", () => {
  test.each([
    "/_matrix/client/v3/rooms/%21room%3Ahs.test/state/m.room.name/a%2Fb",
    "/_matrix/client/v3/profile/%40alice%3Ahs.test",
    "/_matrix/client/v3/a/../b",
    "/_matrix/client/v3/a/%2e%2e/b",
    "/_matrix/client//v3//double",
    "/_matrix/client/v3/x?q=%2F%40&q=a+b&empty=",
  ])("forwards %s byte for byte", async (target) => {
    const res = await rawRequest(proxy.port, `GET ${target} HTTP/1.1\r\nHost: hs.test\r\nConnection: close\r\n\r\n`);
    expect(res.status).toBe(401); // the fake answered, so it saw the request
    expect(lastSeen().target).toBe(target);
  });
});

describe("headers", () => {
  test("hop-by-hop headers are removed in both directions, including those Connection names", async () => {
    hs.on("/hop", (_req, res) => {
      res.writeHead(200, {
        connection: "x-up-private",
        "x-up-private": "1",
        "x-up-public": "2",
        "keep-alive": "timeout=5",
      });
      res.end("ok");
    });
    const res = await rawRequest(
      proxy.port,
      "GET /hop HTTP/1.1\r\nHost: hs.test\r\nConnection: close, x-client-private\r\nX-Client-Private: 1\r\nX-Client-Public: 2\r\n" +
        "Keep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\nTE: trailers\r\nUpgrade: h2c\r\n\r\n",
    );
    const up = lastSeen().headers;
    expect(up["x-client-public"]).toBe("2");
    for (const h of ["x-client-private", "keep-alive", "proxy-authorization", "te", "upgrade"])
      expect(up[h]).toBeUndefined();
    expect(res.headers["x-up-public"]).toBe("2");
    expect(res.headers["x-up-private"]).toBeUndefined();
    expect(res.headers["keep-alive"]).toBeUndefined();
  });

  test("X-Forwarded-For from an untrusted peer is replaced, not trusted", async () => {
    // A raw request: fetch may not set Host (a forbidden header under Deno).
    await rawRequest(
      proxy.port,
      "GET /xff HTTP/1.1\r\nHost: client.example\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    );
    const h = lastSeen().headers;
    expect(h["x-forwarded-for"]).toBe("127.0.0.1");
    expect(h["x-forwarded-proto"]).toBe("http");
    expect(h["x-forwarded-host"]).toBe("client.example");
    expect(h.host).toBe("client.example");
  });

  test("X-Forwarded-For from a trusted proxy is extended", async () => {
    const trusting = await startTestProxy(hs.url, ["--trusted-proxies", "loopback"]);
    try {
      await fetch(`${trusting.url}/xff2`, {
        headers: { "x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https" },
      });
      const h = lastSeen().headers;
      expect(h["x-forwarded-for"]).toBe("203.0.113.9, 127.0.0.1");
      expect(h["x-forwarded-proto"]).toBe("https");
    } finally {
      await trusting.close();
    }
  });
});

test("redirects are passed to the client, not followed", async () => {
  hs.on("/redirect", (_req, res) => {
    res.writeHead(302, { location: "/elsewhere" });
    res.end();
  });
  const before = hs.seen.length;
  const res = await get("/redirect");
  expect(res.status).toBe(302);
  expect(res.headers.get("location")).toBe("/elsewhere");
  expect(hs.seen.length).toBe(before + 1);
});

describe("streaming", () => {
  test("the first response bytes reach the client before the homeserver finishes", async () => {
    let finish!: () => void;
    hs.on("/drip", (_req, res) => {
      res.writeHead(200, { "content-type": "application/octet-stream" });
      res.write("first-chunk;");
      finish = () => res.end("last");
    });
    const res = await get("/drip");
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toBe("first-chunk;");
    finish();
    let rest = "";
    for (let r = await reader.read(); !r.done; r = await reader.read()) rest += new TextDecoder().decode(r.value);
    expect(rest).toBe("last");
  });

  test("the request body streams to the homeserver before the client finishes sending", async () => {
    let gotFirst!: (s: string) => void;
    const firstSeen = new Promise<string>((r) => (gotFirst = r));
    hs.on(
      "/upload",
      (req, res) => {
        let all = "";
        req.on("data", (c: Buffer) => {
          if (all === "") gotFirst(c.toString());
          all += c.toString();
        });
        req.on("end", () => res.end(all));
      },
      { raw: true },
    );
    const req = http.request(`${proxy.url}/upload`, { method: "POST", headers: { "transfer-encoding": "chunked" } });
    const answer = new Promise<string>((resolve) =>
      req.on("response", (r) => {
        let s = "";
        r.on("data", (c) => (s += c));
        r.on("end", () => resolve(s));
      }),
    );
    req.write("part-one;");
    expect(await firstSeen).toBe("part-one;");
    req.end("part-two");
    expect(await answer).toBe("part-one;part-two");
  });

  test("the header timeout never cuts a slow body", async () => {
    hs.on("/slowbody", (_req, res) => {
      res.writeHead(200);
      res.write("a");
      setTimeout(() => res.end("b"), 2500); // longer than the 1500 ms header timeout
    });
    const res = await get("/slowbody");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("ab");
  });
});

describe("failures", () => {
  test("an unreachable homeserver gives 502 M_UNKNOWN with CORS", async () => {
    const dead = net.createServer();
    await new Promise<void>((r) => dead.listen(0, "127.0.0.1", r));
    const port = (dead.address() as net.AddressInfo).port;
    await new Promise((r) => dead.close(r));
    const p = await startTestProxy(`http://127.0.0.1:${port}`);
    try {
      const res = await fetch(`${p.url}/_matrix/client/v3/sync`);
      expect(res.status).toBe(502);
      expect(res.headers.get("access-control-allow-origin")).toBe("*");
      const body = await res.json();
      expect(body.errcode).toBe("M_UNKNOWN");
      expect(typeof body.error).toBe("string");
    } finally {
      await p.close();
    }
  });

  test("a homeserver that accepts but never answers gives 504", async () => {
    hs.on("/hang", () => {});
    const res = await get("/hang");
    expect(res.status).toBe(504);
    expect((await res.json()).errcode).toBe("M_UNKNOWN");
  });

  test("a client that disconnects aborts the upstream request", async () => {
    hs.on("/_matrix/client/v3/sync?abort", () => {});
    const sock = net.connect(proxy.port, "127.0.0.1");
    await new Promise((r) => sock.once("connect", r));
    sock.write("GET /_matrix/client/v3/sync?abort&timeout=30000 HTTP/1.1\r\nHost: hs.test\r\n\r\n");
    await expect.poll(() => hs.seen.some((s) => s.target.includes("?abort"))).toBe(true);
    sock.destroy();
    await expect.poll(() => hs.closedEarly.some((t) => t.includes("?abort")), { timeout: 3000 }).toBe(true);
  });
});

test("a long-poll idle for longer than 10 s survives", { timeout: 30_000 }, async () => {
  hs.on("/_matrix/client/v3/sync?long", (_req, res) => void setTimeout(() => res.end('{"next_batch":"1"}'), 12_000));
  const res = await get("/_matrix/client/v3/sync?long&timeout=12000");
  expect(res.status).toBe(200);
  expect(await res.json()).toEqual({ next_batch: "1" });
});

describe("intercepted routes", () => {
  test("/versions gains org.matrix.msc2638 and keeps the rest", async () => {
    const res = await get("/_matrix/client/versions");
    const body = await res.json();
    expect(body.versions).toEqual(["r0.6.1", "v1.11"]);
    expect(body.unstable_features).toEqual({ "org.example.other": true, "org.matrix.msc2638": true });
    expect(lastSeen().headers["accept-encoding"]).toBe("identity");
  });

  test("/versions with a trailing slash is intercepted too", async () => {
    hs.on("/_matrix/client/versions/", (_req, res) => void res.end('{"versions":["v1.1"]}'));
    const body = await (await get("/_matrix/client/versions/")).json();
    expect(body).toEqual({ versions: ["v1.1"], unstable_features: { "org.matrix.msc2638": true } });
    expect(lastSeen().target).toBe("/_matrix/client/versions/");
  });

  test("OPTIONS preflight on an intercepted route is answered with CORS headers", async () => {
    const before = hs.seen.length;
    const res = await fetch(`${proxy.url}/_matrix/client/versions`, { method: "OPTIONS" });
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
    expect(res.headers.get("access-control-allow-methods")).toContain("POST");
    expect(res.headers.get("access-control-allow-headers")).toContain("Authorization");
    expect(hs.seen.length).toBe(before);
  });
});

test("a whole client session works through the proxy", async () => {
  const post = (path: string, body: unknown, token?: string, method = "POST") =>
    fetch(proxy.url + path, {
      method,
      headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    });
  const reg = await (await post("/_matrix/client/v3/register", { username: "alice", password: "pw" })).json();
  expect(reg.user_id).toBe("@alice:hs.test");
  const login = await (
    await post("/_matrix/client/v3/login", {
      type: "m.login.password",
      identifier: { type: "m.id.user", user: "alice" },
      password: "pw",
    })
  ).json();
  const token = login.access_token as string;
  const first = await (
    await fetch(`${proxy.url}/_matrix/client/v3/sync?timeout=0`, { headers: { authorization: `Bearer ${token}` } })
  ).json();
  const waiting = fetch(`${proxy.url}/_matrix/client/v3/sync?since=${first.next_batch}&timeout=10000`, {
    headers: { authorization: `Bearer ${token}` },
  });
  const sent = await (
    await post(
      "/_matrix/client/v3/rooms/!r:hs.test/send/m.room.message/t1",
      { msgtype: "m.text", body: "hi" },
      token,
      "PUT",
    )
  ).json();
  expect(sent.event_id).toMatch(/^\$/);
  const next = await (await waiting).json();
  expect(next.timeline).toEqual([
    { type: "m.room.message", sender: "@alice:hs.test", content: { msgtype: "m.text", body: "hi" } },
  ]);
});
