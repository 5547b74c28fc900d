// --front-threads: more front ends in Worker threads on the same port (server/front/threads.ts).
// Connections land on any thread (SO_REUSEPORT), so each test opens many and checks every one:
// relayed, intercepted and /sync requests answered alike, long-polls on other threads woken by
// a refresh, their metrics and log lines in the process's own, and a drain that covers them.
// Bun only (the front end is Bun's).
import { mkdtempSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { RawClient } from "../helpers/raw-http1.ts";
import { startWorld, type World } from "../helpers/world.ts";
import { sample, scrape, startLoggedProxy } from "./ops-helpers.ts";

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const N = 24; // connections per test: with 3 threads, all on one thread has odds of 3^-23

const get = (c: RawClient, target: string, token?: string) =>
  c.write(`GET ${target} HTTP/1.1\r\nhost: x\r\n${token ? `authorization: Bearer ${token}\r\n` : ""}\r\n`);

describe.skipIf(!isBun)("front-end threads, with refreshes", () => {
  let w: World;
  let bob: string;
  let answer: (req: IncomingMessage, res: ServerResponse) => void;

  beforeAll(async () => {
    w = await startWorld(["--front-threads", "3", "--refresh-cache-ms", "0", "--rate-target-burst", "100"]);
    bob = `@bob:${w.remote.serverName}`;
    w.remote.setUser(makeUser(bob, { devices: ["DEV0", "DEV1"] }));
    w.hs.on("/_matrix/client/v3/sync", (req, res) => answer(req, res));
  });
  afterAll(() => w.close());

  test("every connection gets its relayed, intercepted and /sync answers; the other threads served some", async () => {
    answer = (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"next_batch":"n2"}');
    };
    const clients = await Promise.all(Array.from({ length: N }, () => RawClient.connect(w.proxy.port)));
    const tokens = clients.map((_, i) => w.login(`user${i}`, `D${i}`));
    for (const [i, c] of clients.entries()) {
      get(c, "/_matrix/client/v3/account/whoami", tokens[i]);
      get(c, "/_matrix/client/versions");
      get(c, "/_matrix/client/v3/sync?since=n1&timeout=0", tokens[i]);
    }
    for (const [i, c] of clients.entries()) {
      expect(JSON.parse((await c.read()).body.toString()).user_id).toBe(`@user${i}:hs.test`);
      expect(JSON.parse((await c.read()).body.toString()).unstable_features["org.matrix.msc2638"]).toBe(true);
      expect(JSON.parse((await c.read()).body.toString())).toEqual({ next_batch: "n2" });
      c.close();
    }
    await w.proxy.frontThreads!.flush();
    const served = w.proxy.frontThreads!.served;
    expect(served).toHaveLength(2);
    expect(served.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
  });

  test("long-polls held on any thread are answered early by a refresh, naming the user", async () => {
    answer = () => {}; // the homeserver holds every poll
    const tokens = Array.from({ length: N }, (_, i) => w.login("alice", `A${i}`));
    const clients = await Promise.all(tokens.map(() => RawClient.connect(w.proxy.port)));
    clients.forEach((c, i) => get(c, "/_matrix/client/v3/sync?since=a1&timeout=30000", tokens[i]));
    await expect
      .poll(() => w.hs.seen.filter((r) => r.target.includes("since=a1&timeout=30000")).length, { timeout: 5000 })
      .toBe(N);
    // alice asks: every one of her devices (the homeserver's /devices) hears of bob.
    expect((await w.refresh(bob, tokens[0]!)).status).toBe(202);
    // Within 5 s, where the homeserver would hold them for 30.
    const bodies = await Promise.all(
      clients.map(async (c) => JSON.parse((await c.read({ timeoutMs: 5000 })).body.toString())),
    );
    // At the position each asked from, with a suffix of ours (src/delivery/tokens.ts).
    for (const b of bodies)
      expect(b).toEqual({ next_batch: expect.stringMatching(/^a1\.mrp_/), device_lists: { changed: [bob], left: [] } });
    clients.forEach((c) => c.close());
  });

  test("a /sync that reports the user, on any thread, re-verifies the overlay", async () => {
    answer = (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(`{"next_batch":"r2","device_lists":{"changed":["${bob}"]}}`);
    };
    const before = w.remote.requests.length;
    const clients = await Promise.all(Array.from({ length: N }, () => RawClient.connect(w.proxy.port)));
    clients.forEach((c, i) => get(c, "/_matrix/client/v3/sync?since=r1&timeout=0", w.login(`reader${i}`, `R${i}`)));
    for (const c of clients) {
      expect(JSON.parse((await c.read()).body.toString()).device_lists.changed).toEqual([bob]);
      c.close();
    }
    await expect.poll(() => w.remote.requests.length, { timeout: 5000 }).toBeGreaterThan(before);
  });
});

describe.skipIf(!isBun)("front-end threads: metrics, logs and drain", () => {
  let hs: FakeHomeserver;
  beforeAll(async () => {
    hs = await startFakeHomeserver();
  });
  afterAll(() => hs.close());

  test("every request served by any thread is counted in /metrics and logged in the process's log", async () => {
    const p = await startLoggedProxy(hs.url, ["--front-threads", "3"]);
    try {
      const clients = await Promise.all(
        Array.from({ length: N }, () => RawClient.connect(Number(new URL(p.url).port))),
      );
      for (const c of clients) get(c, "/_matrix/client/v3/rooms/!r:hs.test/state");
      const ids: string[] = [];
      for (const c of clients) {
        const m = await c.read();
        expect(m.status).toBe(401);
        ids.push(m.headers["x-request-id"]!);
        c.close();
      }
      const text = await scrape(p.opsAddress!);
      expect(sample(text, "resync_http_requests_total", { route: "passthrough", status: "401" })).toBe(N);
      await expect
        .poll(() => ids.filter((id) => p.records().some((r) => r.msg === "request" && r.request_id === id)).length)
        .toBe(N);
    } finally {
      await p.close(1000);
    }
  });

  test("on a unix socket --listen the threads cannot share it: one thread serves, and the log says why", async () => {
    const sock = join(mkdtempSync(join(tmpdir(), "threads-")), "c.sock");
    const p = await startLoggedProxy(hs.url, ["--front-threads", "3", "--listen", `unix:${sock}`]);
    try {
      expect(p.frontThreads).toBeUndefined();
      expect(
        p.records().some((r) => r.level === "warn" && String(r.msg).startsWith("--front-threads is ignored")),
      ).toBe(true);
      const answer = await new Promise<string>((resolve, reject) => {
        const c = connect(sock, () =>
          c.write("GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        let got = "";
        c.on("data", (d) => (got += d))
          .on("end", () => resolve(got))
          .on("error", reject);
      });
      expect(answer.startsWith("HTTP/1.1 200")).toBe(true);
    } finally {
      await p.close(1000);
    }
  });

  test("drain covers every thread: idle connections close, a held poll is cut at the deadline", async () => {
    hs.on("/_matrix/client/v3/sync", () => {}); // held forever
    hs.tokens.set("drain-token", ["@d:hs.test", "DD"]);
    const p = await startLoggedProxy(hs.url, ["--front-threads", "3"]);
    const idle = await Promise.all(Array.from({ length: N }, () => RawClient.connect(Number(new URL(p.url).port))));
    for (const c of idle) get(c, "/_matrix/client/versions");
    for (const c of idle) expect((await c.read()).status).toBe(200);
    const polls = await Promise.all(Array.from({ length: N }, () => RawClient.connect(Number(new URL(p.url).port))));
    for (const c of polls) get(c, "/_matrix/client/v3/sync?since=x&timeout=60000", "drain-token");
    await expect
      .poll(() => hs.seen.filter((r) => r.target.includes("since=x&timeout=60000")).length, { timeout: 5000 })
      .toBe(N);
    const started = Date.now();
    const result = await p.close(1500);
    expect(result.drained).toBe(false);
    expect(Date.now() - started).toBeLessThan(5000);
    for (const c of [...idle, ...polls]) await c.waitClosed();
  });
});
