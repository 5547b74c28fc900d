// Anonymous clients must not pin memory (issue 16 item 2). A route the proxy reads a body of
// (POST /keys/query) checks the token before reading any of it, and a body it reads has a total
// time limit and a minimum rate, then 408. Pass-through bodies stream with no limit of ours.
// Each case holds a real socket open with the body unfinished, on both engines.
import net from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type FakeHomeserver, startFakeHomeserver } from "../helpers/fake-homeserver.ts";
import { startTestProxy, type TestEngine } from "../helpers/proxy.ts";

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const ENGINES: TestEngine[] = isBun ? ["bun", "node"] : ["node"];
const EIGHT_MIB = 8 * 1024 * 1024;
const KEYS_QUERY = "/_matrix/client/v3/keys/query";
const SLIDING = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** The proxy closed the connection after answering. */
  closed: Promise<void>;
}

/** The first response on `sock`; rejects if none is complete within `ms` (the proxy still waits for the body). */
function firstResponse(sock: net.Socket, ms: number): Promise<Answer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const closed = new Promise<void>((r) => sock.once("close", () => r()));
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    sock.on("error", () => {});
    sock.on("data", (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf("\r\n\r\n");
      if (end === -1) return;
      const [statusLine, ...lines] = buf.subarray(0, end).toString("latin1").split("\r\n");
      const headers: Record<string, string> = {};
      for (const l of lines) headers[l.slice(0, l.indexOf(":")).toLowerCase()] = l.slice(l.indexOf(":") + 1).trim();
      const len = Number(headers["content-length"] ?? 0);
      if (buf.length < end + 4 + len) return;
      clearTimeout(timer);
      resolve({
        status: Number(statusLine!.split(" ")[1]),
        headers,
        body: buf.subarray(end + 4, end + 4 + len).toString(),
        closed,
      });
    });
  });
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1", () => resolve(s));
    s.once("error", reject);
  });
}

const head = (target: string, length: number, token?: string) =>
  `POST ${target} HTTP/1.1\r\nHost: proxy.test\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n` +
  (token ? `Authorization: Bearer ${token}\r\n` : "") +
  "\r\n";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.each(ENGINES)("request bodies on intercepted routes (engine %s)", (engine) => {
  let hs: FakeHomeserver;
  let proxy: Awaited<ReturnType<typeof startTestProxy>>;
  const sockets: net.Socket[] = [];
  beforeEach(async () => {
    hs = await startFakeHomeserver();
    hs.tokens.set("good", ["@alice:hs.test", "ALICE"]);
    proxy = await startTestProxy(hs.url, ["--body-timeout-ms", "1500", "--body-min-bytes-per-second", "0"], engine);
  });
  afterEach(async () => {
    sockets.splice(0).forEach((s) => s.destroy());
    await proxy.close(1000);
    await hs.close();
  });
  const open = async () => {
    const s = await connect(proxy.port);
    sockets.push(s);
    return s;
  };

  it("answers 401 M_MISSING_TOKEN before reading the body of an anonymous /keys/query, and closes", async () => {
    const s = await open();
    // All but the last byte of an 8 MiB body: the answer must not wait for it.
    s.write(head(KEYS_QUERY, EIGHT_MIB));
    s.write(Buffer.alloc(64 * 1024, 0x20));
    const a = await firstResponse(s, 5000);
    expect(a.status).toBe(401);
    expect(JSON.parse(a.body).errcode).toBe("M_MISSING_TOKEN");
    expect(a.headers["access-control-allow-origin"]).toBe("*");
    await a.closed;
    expect(hs.seen.some((r) => r.target.startsWith(KEYS_QUERY))).toBe(false);
  });

  it("relays the homeserver's 401 for a refused token before reading the body", async () => {
    const s = await open();
    s.write(head(KEYS_QUERY, EIGHT_MIB, "bogus"));
    s.write(Buffer.alloc(64 * 1024, 0x20));
    const a = await firstResponse(s, 5000);
    expect(a.status).toBe(401);
    expect(JSON.parse(a.body).errcode).toBe("M_UNKNOWN_TOKEN");
    await a.closed;
    // Only the whoami went upstream, never the query.
    expect(hs.seen.some((r) => r.target.startsWith(KEYS_QUERY))).toBe(false);
  });

  it("answers 408 M_UNKNOWN when an authenticated body stalls past --body-timeout-ms", async () => {
    const s = await open();
    s.write(head(KEYS_QUERY, 1000, "good"));
    s.write('{"device_keys": {');
    const a = await firstResponse(s, 8000);
    expect(a.status).toBe(408);
    expect(JSON.parse(a.body).errcode).toBe("M_UNKNOWN");
    await a.closed;
    expect(hs.seen.some((r) => r.target.startsWith(KEYS_QUERY))).toBe(false);
  });

  it("answers 408 when an authenticated sliding-sync body stalls past --body-timeout-ms", async () => {
    // The proxy reads this body too (which connection, did it ask for e2ee): the same limits.
    const s = await open();
    s.write(head(`${SLIDING}?pos=p1&timeout=0`, 1000, "good"));
    s.write('{"conn_id": "encryption", ');
    const a = await firstResponse(s, 8000);
    expect(a.status).toBe(408);
    expect(JSON.parse(a.body).errcode).toBe("M_UNKNOWN");
    await a.closed;
    expect(hs.seen.some((r) => r.target.startsWith(SLIDING))).toBe(false);
  });

  it("still serves an authenticated /keys/query whose body arrives in pieces within the limit", async () => {
    hs.on(KEYS_QUERY, (_req, res) => {
      const out = JSON.stringify({ device_keys: {}, failures: {} });
      res.writeHead(200, { "content-type": "application/json", "content-length": out.length });
      res.end(out);
    });
    const body = JSON.stringify({ device_keys: { "@bob:remote.test": [] } });
    const s = await open();
    s.write(head(KEYS_QUERY, body.length, "good"));
    s.write(body.slice(0, 10));
    await sleep(300);
    s.write(body.slice(10));
    const a = await firstResponse(s, 5000);
    expect(a.status).toBe(200);
    expect(hs.seen.find((r) => r.target.startsWith(KEYS_QUERY))?.body.toString()).toBe(body);
  });

  it("lets a pass-through body take longer than --body-timeout-ms", async () => {
    hs.on("/_matrix/client/v3/rooms/", (_req, res, body) => {
      const out = JSON.stringify({ got: body.length });
      res.writeHead(200, { "content-type": "application/json", "content-length": out.length });
      res.end(out);
    });
    const s = await open();
    const target = "/_matrix/client/v3/rooms/!r:hs.test/send/m.room.message/t1";
    s.write(head(target, 30, "good").replace("POST", "PUT"));
    for (let i = 0; i < 3; i++) {
      s.write("0123456789");
      await sleep(900); // 2.7 s in all: longer than the 1.5 s limit on intercepted bodies
    }
    const a = await firstResponse(s, 5000);
    expect(a.status).toBe(200);
    expect(JSON.parse(a.body)).toEqual({ got: 30 });
  });
});

describe.each(ENGINES)("minimum body rate (engine %s)", (engine) => {
  it("answers 408 when an authenticated body trickles below --body-min-bytes-per-second", async () => {
    const hs = await startFakeHomeserver();
    hs.tokens.set("good", ["@alice:hs.test", "ALICE"]);
    const proxy = await startTestProxy(
      hs.url,
      ["--body-timeout-ms", "60000", "--body-min-bytes-per-second", "1000"],
      engine,
    );
    const s = await connect(proxy.port);
    try {
      s.write(head(KEYS_QUERY, 100_000, "good"));
      const answer = firstResponse(s, 8000);
      let stop = false;
      void answer.finally(() => (stop = true)).catch(() => {});
      // 10 bytes every 100 ms is 100 B/s: a tenth of the minimum.
      for (let i = 0; i < 60 && !stop; i++) {
        s.write("          ");
        await sleep(100);
      }
      const a = await answer;
      expect(a.status).toBe(408);
      expect(JSON.parse(a.body).errcode).toBe("M_UNKNOWN");
    } finally {
      s.destroy();
      await proxy.close(1000);
      await hs.close();
    }
  });
});
