// GET /sync served by the Bun front end itself (engine/bun/sync-gate.ts): streamed straight to
// the homeserver when nothing is pending, injected into there when something is, with the
// token looked up first. Bun only (Deno always runs the node:http engine).
import { readdirSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { RawClient } from "../helpers/raw-http1.ts";
import { startWorld, type World } from "../helpers/world.ts";

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";

describe.skipIf(!isBun)("/sync in the Bun front end", () => {
  let w: World;
  let bob: string;
  let alice: string;
  // How the homeserver answers /sync: set per test.
  let answer: (req: IncomingMessage, res: ServerResponse) => void;
  const seenSyncs = () => w.hs.seen.filter((r) => r.target.startsWith("/_matrix/client/v3/sync"));
  const lastSync = () => seenSyncs().at(-1)!;

  beforeAll(async () => {
    w = await startWorld(["--refresh-cache-ms", "0", "--rate-target-burst", "100"]);
    bob = `@bob:${w.remote.serverName}`;
    w.remote.setUser(makeUser(bob, { devices: ["DEV0", "DEV1"] }));
    w.hs.on("/_matrix/client/v3/sync", (req, res) => answer(req, res));
    alice = w.login("alice", "ALICE1");
  });
  afterAll(() => w.close());

  async function get(token: string, target: string, headers: Record<string, string> = {}) {
    const c = await RawClient.connect(w.proxy.port);
    const extra = Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join("");
    c.write(`GET ${target} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${token}\r\n${extra}\r\n`);
    const m = await c.read({ timeoutMs: 10_000 });
    c.close();
    return m;
  }

  test("nothing pending: the homeserver's compressed answer streams through byte for byte", async () => {
    const gz = gzipSync(JSON.stringify({ next_batch: "s2", rooms: {} }));
    answer = (_req, res) => {
      res.writeHead(200, {
        "content-type": "application/json",
        "content-encoding": "gzip",
        "content-length": gz.length,
      });
      res.end(gz);
    };
    const m = await get(alice, "/_matrix/client/v3/sync?since=s1&timeout=0", { "accept-encoding": "gzip" });
    expect(m.status).toBe(200);
    expect(m.headers["content-encoding"]).toBe("gzip");
    expect(m.body.equals(gz)).toBe(true);
    // Detection (on by default) reads to-device events, so the body is asked for uncompressed;
    // a homeserver that compresses anyway is streamed through untouched (not read). With
    // --detect off and no overlay the client's own wish goes upstream (self-heal.test.ts).
    expect(lastSync().headers["accept-encoding"]).toBe("identity");
    expect(lastSync().target).toBe("/_matrix/client/v3/sync?since=s1&timeout=0");
  });

  test("pending: the homeserver is asked to answer at once, and its chunked body is injected into as it streams", async () => {
    answer = (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" }); // no length: chunked
      res.write('{"next_batch":"s3",');
      res.write('"device_lists":{"changed":["@carol:hs.test"],"left":[]},"rooms":{"join":{}}}');
      res.end();
    };
    expect((await w.refresh(bob, alice)).status).toBe(202);
    const m = await get(alice, "/_matrix/client/v3/sync?since=s2&timeout=30000", { "accept-encoding": "gzip" });
    expect(lastSync().target).toBe("/_matrix/client/v3/sync?since=s2&timeout=0");
    expect(lastSync().headers["accept-encoding"]).toBe("identity");
    expect(m.headers["transfer-encoding"]).toBe("chunked");
    expect(m.headers["content-length"]).toBeUndefined();
    const body = JSON.parse(m.body.toString());
    expect(body.device_lists.changed).toEqual(["@carol:hs.test", bob]);
    // The homeserver's s3 with a suffix of ours (src/delivery/tokens.ts): it carried the delivery.
    expect(body.next_batch).toMatch(/^s3\.mrp_[0-9a-z]{12}$/);
    // The next poll from it acknowledges, and nothing is injected any more; the homeserver sees s3.
    answer = (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"next_batch":"s4"}');
    };
    const after = await get(alice, `/_matrix/client/v3/sync?since=${body.next_batch}&timeout=0`);
    expect(JSON.parse(after.body.toString())).toEqual({ next_batch: "s4" });
    expect(lastSync().target).toBe("/_matrix/client/v3/sync?since=s3&timeout=0");
  });

  test("pending, a body in many small chunks per read (as Synapse writes /sync): fed to the splice as one, injected", async () => {
    const user = w.login("hank", "HANK1");
    expect((await w.refresh(bob, user)).status).toBe(202);
    const filler = `"rooms":{"join":{"!r:hs.test":{"timeline":{"events":[{"content":{"body":"\\"device_lists\\":1"}}]}}}}`;
    const doc = `{"next_batch":"h2","device_lists":{"changed":["@carol:hs.test"]},${filler},"pad":"${"p".repeat(20_000)}"}`;
    answer = (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      // 7-byte chunks written together: one read brings hundreds, names cut across them.
      res.cork();
      for (let at = 0; at < doc.length; at += 7) res.write(doc.slice(at, at + 7));
      res.end();
      res.uncork();
    };
    const m = await get(user, "/_matrix/client/v3/sync?since=h1&timeout=0");
    const body = JSON.parse(m.body.toString());
    const want = JSON.parse(doc);
    want.device_lists.changed.push(bob);
    expect({ ...body, next_batch: "h2" }).toEqual(want);
    expect(body.next_batch).toMatch(/^h2\.mrp_/);
  });

  test("pending, with a Content-Length body: it streams to the client before the homeserver has finished, re-framed chunked", async () => {
    const user = w.login("gina", "GINA1");
    expect((await w.refresh(bob, user)).status).toBe(202);
    let finish!: () => void;
    const rest = new Promise<void>((r) => (finish = r));
    const start = `{"next_batch":"g2","rooms":{"join":{"!r:hs.test":{"timeline":{"events":[{"content":{"body":"${"y".repeat(100_000)}"}}]}}}}`;
    answer = async (_req, res) => {
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(start) + 1 });
      res.write(start);
      await rest;
      res.end("}");
    };
    const c = await RawClient.connect(w.proxy.port);
    const ask = (since: string) =>
      c.write(
        `GET /_matrix/client/v3/sync?since=${since}&timeout=0 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${user}\r\n\r\n`,
      );
    ask("g1");
    // The start of the body reached the client while the homeserver still holds its last byte.
    await c.waitFor('"timeline":{"events":[{"content":{"body":"yyy');
    finish();
    const m = await c.read();
    expect(m.headers["transfer-encoding"]).toBe("chunked");
    expect(m.headers["content-length"]).toBeUndefined();
    const body = JSON.parse(m.body.toString());
    expect(body.device_lists).toEqual({ changed: [bob] });
    expect(body.next_batch).toMatch(/^g2\.mrp_/);
    expect(body.rooms.join["!r:hs.test"].timeline.events[0].content.body).toHaveLength(100_000);
    // The connection carries the next request: our g2 acknowledged the delivery.
    answer = (_req, res) => {
      res.writeHead(200, { "content-type": "application/json", "content-length": 19 });
      res.end('{"next_batch":"g3"}');
    };
    ask(body.next_batch);
    const next = await c.read();
    c.close();
    expect(next.body.toString()).toBe('{"next_batch":"g3"}');
    expect(next.headers["content-length"]).toBe("19");
  });

  test("pending, for an HTTP/1.0 client: the injected body is delimited by closing the connection", async () => {
    const user = w.login("hal", "HAL1");
    expect((await w.refresh(bob, user)).status).toBe(202);
    answer = (_req, res) => {
      res.writeHead(200, { "content-type": "application/json", "content-length": 19 });
      res.end('{"next_batch":"h2"}');
    };
    const c = await RawClient.connect(w.proxy.port);
    c.write(
      `GET /_matrix/client/v3/sync?since=h1&timeout=0 HTTP/1.0\r\nconnection: keep-alive\r\nauthorization: Bearer ${user}\r\n\r\n`,
    );
    await c.waitClosed();
    const m = await c.read();
    expect(m.headers["transfer-encoding"]).toBeUndefined();
    expect(m.headers["content-length"]).toBeUndefined();
    expect(m.headers.connection).toBe("close");
    expect(JSON.parse(m.body.toString())).toEqual({
      next_batch: expect.stringMatching(/^h2\.mrp_/),
      device_lists: { changed: [bob] },
    });
  });

  test("pending, but the homeserver compresses anyway: its body passes unchanged and the delivery waits", async () => {
    expect((await w.refresh(bob, alice)).status).toBe(202);
    const gz = gzipSync(JSON.stringify({ next_batch: "s5" }));
    answer = (_req, res) => {
      res.writeHead(200, {
        "content-type": "application/json",
        "content-encoding": "gzip",
        "content-length": gz.length,
      });
      res.end(gz);
    };
    const m = await get(alice, "/_matrix/client/v3/sync?since=s4&timeout=0");
    answer = (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"next_batch":"s6"}');
    };
    // With --front-threads above 1 the connection may land on another front-end thread, which
    // hands an injection to the app's sync route (engine/bun/threads.ts): that route inflates
    // the body and injects into it (README "How it works", item 8). Either way bob reaches the
    // client exactly once.
    const threads = Number(process.env.RESYNC_TEST_FRONT_THREADS ?? 1);
    if (threads <= 1 || m.headers["content-encoding"] === "gzip") {
      expect(m.body.equals(gz)).toBe(true);
      const next = JSON.parse((await get(alice, "/_matrix/client/v3/sync?since=s5&timeout=0")).body.toString());
      expect(next.device_lists.changed).toEqual([bob]);
    } else {
      const body = JSON.parse(m.body.toString());
      expect(body).toEqual({ next_batch: expect.stringMatching(/^s5\.mrp_/), device_lists: { changed: [bob] } });
      // Its token acknowledges the delivery: nothing is delivered twice.
      const next = JSON.parse(
        (await get(alice, `/_matrix/client/v3/sync?since=${body.next_batch}&timeout=0`)).body.toString(),
      );
      expect(next).toEqual({ next_batch: "s6" });
    }
  });

  test("overlays exist: a passing /sync is read as it streams, and the homeserver's own report drops the overlay", async () => {
    const carol = w.login("carol", "CAROL1");
    answer = (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      // Split inside the member name: the reader works across chunk boundaries.
      res.write(
        '{"next_batch":"c2","rooms":{"join":{"!r:hs.test":{"timeline":{"events":[{"content":{"device_lists":{"changed":["@x:y"]}}}]}}}},"device_li',
      );
      res.end(`sts":{"changed":["${bob}"]}}`);
    };
    const before = w.remote.requests.length;
    const m = await get(carol, "/_matrix/client/v3/sync?since=c1&timeout=0", { "accept-encoding": "gzip" });
    expect(lastSync().headers["accept-encoding"]).toBe("identity");
    expect(JSON.parse(m.body.toString()).device_lists.changed).toEqual([bob]);
    // Re-verified in the background: a new federation fetch of bob's list.
    await expect.poll(() => w.remote.requests.length, { timeout: 5000 }).toBeGreaterThan(before);
  });

  test("a body too big to hold for reading afterwards is read as it streams: the report still counts", async () => {
    // A refresh stores a fresh snapshot: an overlay exists. Frank has nothing pending (he did
    // not ask, and tracks nobody), so his /sync is only read, not injected into.
    expect((await w.refresh(bob, w.login("carol", "CAROL1"))).status).toBe(202);
    const frank = w.login("frank", "FRANK1");
    const filler = JSON.stringify({
      join: {
        "!r:hs.test": {
          timeline: {
            events: Array.from({ length: 36_000 }, (_, i) => ({
              type: "m.room.message",
              content: { body: `message ${i} ${"x".repeat(220)}` },
            })),
          },
        },
      },
    });
    expect(filler.length).toBeGreaterThan(9_000_000);
    answer = (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(`{"next_batch":"c3","rooms":${filler},"device_lists":{"changed":["${bob}"]}}`);
    };
    const before = w.remote.requests.length;
    const m = await get(frank, "/_matrix/client/v3/sync?since=f1&timeout=0");
    expect(m.body.length).toBe(Buffer.byteLength(filler) + 60 + bob.length);
    await expect.poll(() => w.remote.requests.length, { timeout: 5000 }).toBeGreaterThan(before);
  });

  test("a token not yet known is looked up first; a request pipelined behind it waits its turn", async () => {
    const dave = w.login("dave", "DAVE1");
    answer = (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"next_batch":"d2"}');
    };
    const c = await RawClient.connect(w.proxy.port);
    c.write(
      `GET /_matrix/client/v3/sync?since=d1&timeout=0 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${dave}\r\n\r\n` +
        "GET /_matrix/client/versions HTTP/1.1\r\nhost: x\r\n\r\n",
    );
    const first = await c.read();
    const second = await c.read();
    c.close();
    expect(JSON.parse(first.body.toString())).toEqual({ next_batch: "d2" });
    expect(JSON.parse(second.body.toString()).unstable_features["org.matrix.msc2638"]).toBe(true);
  });

  test("a client that leaves during the token lookup sends nothing to the homeserver", async () => {
    const erin = w.login("erin", "ERIN1");
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    w.hs.on("/_matrix/client/v3/account/whoami", async (_req, res) => {
      await gate;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ user_id: "@erin:hs.test", device_id: "ERIN1" }));
    });
    const c = await RawClient.connect(w.proxy.port);
    c.write(
      `GET /_matrix/client/v3/sync?since=e1&timeout=30000 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${erin}\r\n\r\n`,
    );
    await expect
      .poll(() => w.hs.seen.some((r) => r.target.includes("whoami") && r.headers.authorization === `Bearer ${erin}`))
      .toBe(true);
    const syncsBefore = seenSyncs().length;
    c.close();
    await new Promise((r) => setTimeout(r, 100));
    release();
    await new Promise((r) => setTimeout(r, 300));
    expect(seenSyncs().length).toBe(syncsBefore);
  });

  test("held long-polls with nothing pending cost no hop through the app: under 5 descriptors each, in-process", async () => {
    const n = 60;
    const tokens = Array.from({ length: n }, (_, i) => w.login(`poll${i}`, `P${i}`));
    answer = () => {}; // hold every poll
    const fds = () => readdirSync("/proc/self/fd").length;
    // Warm the token cache, so the count below is only the held polls.
    const warm = answer;
    answer = (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"next_batch":"p1"}');
    };
    for (const t of tokens) await get(t, "/_matrix/client/v3/sync?since=p0&timeout=0");
    answer = warm;
    await new Promise((r) => setTimeout(r, 200));
    const base = fds();
    const clients = await Promise.all(tokens.map(() => RawClient.connect(w.proxy.port)));
    clients.forEach((c, i) =>
      c.write(
        `GET /_matrix/client/v3/sync?since=p1&timeout=30000 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${tokens[i]}\r\n\r\n`,
      ),
    );
    await expect
      .poll(() => seenSyncs().filter((r) => r.target.includes("since=p1&timeout=30000")).length, { timeout: 5000 })
      .toBe(n);
    // Here one process holds all four sockets of a poll: client, front, front→homeserver, and
    // the fake homeserver's. Through the app it would be six.
    const perPoll = (fds() - base) / n;
    clients.forEach((c) => c.close());
    expect(perPoll).toBeLessThan(5);
    expect(perPoll).toBeGreaterThanOrEqual(3.5);
  });
});
