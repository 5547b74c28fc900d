// The head work of one pass-through request, in process: parse the client's head, write the
// homeserver's, parse its answer's head, write the client's. No sockets, so the machine's load
// moves it far less than the wrk rounds of bench-ab.ts: each part's best of 7 runs, in ns.
// Usage: bun scripts/bench-heads.ts [SOURCE_ROOT]   (another checkout's root, to compare)
import { join } from "node:path";

const root = process.argv[2] ?? join(import.meta.dirname, "..");
const head = await import(join(root, "src/engine/bun/head.ts"));
const { homeserverHop } = await import(join(root, "src/engine/bun/hop.ts"));
const { clientResponseHead } = await import(join(root, "src/engine/bun/rewrite-head.ts"));
const { requestBody, responseBody } = await import(join(root, "src/engine/bun/framing.ts"));

const hop = homeserverHop({
  upstream: new URL("http://127.0.0.1:8008"),
  headerTimeoutMs: 60_000,
  trusted: () => false,
});
// What wrk sends, and what the bench's nginx upstream answers (scripts/bench/static-upstream.ts).
const req = Buffer.from("GET /_matrix/client/v3/pushrules/ HTTP/1.1\r\nHost: 127.0.0.1:40000\r\n\r\n");
const res = Buffer.from(
  "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 10:00:00 GMT\r\n" +
    "Content-Type: application/json\r\nContent-Length: 60\r\nConnection: keep-alive\r\n\r\n" +
    '{"global":{"content":[],"override":[],"room":[],"sender":[]}}',
);
const reqEnd = head.headEnd(req, 0),
  resEnd = head.headEnd(res, 0);
const h = head.parseRequestHead(req, 0, reqEnd),
  rh = head.parseResponseHead(res, 0, resEnd);
const id = crypto.randomUUID();
const parts: [string, () => unknown][] = [
  ["parse the request head", () => head.parseRequestHead(req, 0, reqEnd)],
  ["its framing and keep-alive", () => [requestBody(h), head.clientKeepsAlive(h)]],
  ["the homeserver's request head", () => hop.requestHead(h, { peer: "127.0.0.1", requestId: id, chunked: false })],
  ["parse the response head", () => head.parseResponseHead(res, 0, resEnd)],
  ["its framing", () => responseBody("GET", rh)],
  [
    "the client's response head and body",
    () => clientResponseHead(rh, { chunked: false, requestId: id }, res, resEnd, res.length),
  ],
];
const N = 300_000;
let total = 0;
for (const [name, f] of parts) {
  for (let i = 0; i < 100_000; i++) f();
  let best = Number.POSITIVE_INFINITY;
  for (let r = 0; r < 7; r++) {
    const t = performance.now();
    for (let i = 0; i < N; i++) f();
    best = Math.min(best, ((performance.now() - t) * 1e6) / N);
  }
  total += best;
  console.log(`${name.padEnd(38)} ${best.toFixed(0).padStart(5)} ns`);
}
console.log(`${"all of it".padEnd(38)} ${total.toFixed(0).padStart(5)} ns`);
