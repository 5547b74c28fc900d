// A fast local stand-in for the homeserver's client API, run as its own Bun process so its CPU
// is not the proxy's. Usage: bun scripts/bench/upstream.ts [server_name]  (prints its port)
//
//   /_matrix/key/v2/server        our key, signed (the proxy's start-up check passes on loopback)
//   …/account/whoami, …/devices    any bearer token T is @T:<server_name>, device D_T
//   …/sync?bench_bytes=N          a /sync-style JSON body of exactly N bytes, streamed in 64 KiB chunks
//   …/sync?bench_drip=K,MS        a /sync-style body: a first chunk at once, then K more, one per MS ms
//   …/sync?…&timeout=T (T > 0)    a long-poll held for T ms (counted in /bench/held)
//   /big/N                        N bytes of filler (the old pass-through 5 MB case)
//   anything else                 a small JSON object
import { Buffer } from "node:buffer";
import { keyDocument } from "./binary.ts";

const serverName = process.argv[2] ?? "bench.test";
const keyDoc = keyDocument(serverName);

const small = JSON.stringify({ versions: ["v1.11"], unstable_features: { "org.example": true } });
const filler = new Uint8Array(64 * 1024).fill(0x61);
const enc = new TextEncoder();
const json = (body: string, status = 200) =>
  new Response(body, { status, headers: { "content-type": "application/json" } });

// A /sync body: one room whose timeline holds as many ~300-byte events as the size needs.
const SYNC_HEAD = enc.encode(
  '{"next_batch":"s2_bench","device_lists":{"changed":[],"left":[]},"rooms":{"join":{"!bench:example.org":{"timeline":{"limited":false,"prev_batch":"p1","events":[',
);
const SYNC_TAIL = enc.encode("]}}}}}");
const EVENT = `{"type":"m.room.message","sender":"@alice:example.org","event_id":"$0123456789abcdefghijklmnopqrstuvwxyzABCDEF","origin_server_ts":1700000000000,"unsigned":{"age":1234},"content":{"msgtype":"m.text","body":"the keys rotate at noon, why is this device list stale? résumé 👍 ${"x".repeat(60)}"}}`;
const EVENTS_CHUNK = enc.encode(`${EVENT},`.repeat(Math.floor((64 * 1024) / (Buffer.byteLength(EVENT) + 1))));
const LAST_EVENT = enc.encode(EVENT);

function syncStream(total: number): ReadableStream<Uint8Array> {
  let sent = 0;
  let stage: "head" | "events" | "done" = "head";
  return new ReadableStream({
    type: "bytes",
    pull(c) {
      if (stage === "head") {
        c.enqueue(SYNC_HEAD.slice());
        sent += SYNC_HEAD.length;
        stage = "events";
      } else if (stage === "events" && sent + EVENTS_CHUNK.length + LAST_EVENT.length + SYNC_TAIL.length <= total) {
        c.enqueue(EVENTS_CHUNK.slice());
        sent += EVENTS_CHUNK.length;
      } else if (stage === "events") {
        const room = total - sent - LAST_EVENT.length - SYNC_TAIL.length;
        const count = Math.max(0, Math.floor(room / (LAST_EVENT.length + 1)));
        // JSON whitespace pads the body to exactly `total` bytes.
        const more = enc.encode(
          `${EVENT},`.repeat(count) + " ".repeat(Math.max(0, room - count * (LAST_EVENT.length + 1))),
        );
        c.enqueue(Buffer.concat([more, LAST_EVENT, SYNC_TAIL]));
        stage = "done";
      } else c.close();
    },
  });
}

function dripStream(chunks: number, everyMs: number): ReadableStream<Uint8Array> {
  let timer: ReturnType<typeof setInterval> | undefined;
  return new ReadableStream({
    start(c) {
      c.enqueue(SYNC_HEAD.slice());
      let n = 0;
      timer = setInterval(() => {
        if (n++ < chunks) return c.enqueue(enc.encode(`${EVENT},`));
        clearInterval(timer);
        c.enqueue(Buffer.concat([LAST_EVENT, SYNC_TAIL]));
        c.close();
      }, everyMs);
    },
    cancel() {
      clearInterval(timer);
    },
  });
}

let held = 0;
function holdLongPoll(req: Request, timeoutMs: number): Promise<Response> {
  held++;
  return new Promise((resolve) => {
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      held--;
      clearTimeout(t);
      resolve(json('{"next_batch":"s3_bench"}'));
    };
    const t = setTimeout(finish, timeoutMs);
    req.signal.addEventListener("abort", finish);
  });
}

const tokenOf = (req: Request) =>
  req.headers.get("authorization")?.replace(/^Bearer /, "") ?? new URL(req.url).searchParams.get("access_token");

const server = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  idleTimeout: 0, // long-polls are idle for their whole timeout
  fetch(req) {
    const url = new URL(req.url);
    const path = url.pathname;
    if (path === "/_matrix/key/v2/server") return json(keyDoc);
    if (path === "/bench/held") return json(JSON.stringify({ held }));
    if (path.startsWith("/big/")) {
      const total = Number(path.slice(5));
      let sent = 0;
      return new Response(
        new ReadableStream({
          type: "bytes",
          pull(c) {
            const n = Math.min(filler.length, total - sent);
            if (n <= 0) return c.close();
            c.enqueue(filler.slice(0, n));
            sent += n;
          },
        }),
        { headers: { "content-type": "application/json" } },
      );
    }
    if (path === "/_matrix/client/v3/account/whoami" || path === "/_matrix/client/v3/devices") {
      const t = tokenOf(req);
      if (!t) return json('{"errcode":"M_MISSING_TOKEN","error":"Missing access token"}', 401);
      if (path.endsWith("/devices")) return json(JSON.stringify({ devices: [{ device_id: `D_${t}` }] }));
      return json(JSON.stringify({ user_id: `@${t}:${serverName}`, device_id: `D_${t}` }));
    }
    if (path === "/_matrix/client/v3/sync") {
      const q = url.searchParams;
      const headers = { "content-type": "application/json" };
      if (q.has("bench_bytes")) return new Response(syncStream(Number(q.get("bench_bytes"))), { headers });
      if (q.has("bench_drip")) {
        const [k = 10, ms = 100] = q.get("bench_drip")!.split(",").map(Number);
        return new Response(dripStream(k, ms), { headers });
      }
      const timeout = Number(q.get("timeout") ?? 0);
      if (timeout > 0) return holdLongPoll(req, timeout);
      return json('{"next_batch":"s2_bench","rooms":{"join":{}}}');
    }
    return json(small);
  },
});
console.log(`upstream listening ${server.port}`);
