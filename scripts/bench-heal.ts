// Self-healing's costs (docs/performance.md "Self-healing"), figures only, no thresholds:
//   1. /sync with a `to_device` member of 100 events, through two in-process proxies alternately
//      (--detect on and off) against one fake homeserver: per-request time, p50 and p99;
//   2. learning the homeserver's view from a 1000-device /keys/query answer: time to the first
//      byte with and without learning, and the learning itself (done after the answer went out);
//   3. the audit of 10,000 tracked users at 2/s against the fake remote: the process's CPU share
//      and RSS growth over a window (the fake remote runs in this process too: an upper bound).
// Usage: npx bun scripts/bench-heal.ts [samples] [auditSeconds]      (binds 127.0.0.1 only)
import { createHash } from "node:crypto";
import { request } from "node:http";
import { keysQueryAnswer, fakeB64 } from "../test/helpers/bodies.ts";
import { makeUser } from "../test/helpers/fake-devices.ts";
import { startWorld } from "../test/helpers/world.ts";
import { startTestProxy } from "../test/helpers/proxy.ts";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { viewsFromAnswer } from "../src/delivery/hs-view.ts";
import { ViewParser } from "../src/delivery/view-parser.ts";
import { ToDeviceWatch } from "../src/delivery/to-device-watch.ts";
import { Views } from "../src/delivery/views.ts";
import { createLogger } from "../src/ops/log.ts";
import { openSqliteStore } from "../src/store/sqlite.ts";

const samples = Number(process.argv[2] ?? 400);
const auditSeconds = Number(process.argv[3] ?? 30);
const pct = (a: number[], p: number) => [...a].sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor((p / 100) * a.length))]!;
const ms = (n: number) => `${n.toFixed(3)} ms`;

/** One request; resolves with [ms to the first body byte, ms to the end]. */
function timed(url: string, path: string, token: string, body?: string): Promise<[number, number]> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let first = 0;
    const u = new URL(url);
    const req = request({ host: u.hostname, port: u.port, path, method: body ? "POST" : "GET", headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json", "content-length": Buffer.byteLength(body) } : {}) }, agent: false }, (res) => {
      res.on("data", () => void (first ||= performance.now() - t0));
      res.on("end", () => resolve([first, performance.now() - t0]));
    });
    req.on("error", reject);
    req.end(body);
  });
}

const w = await startWorld(["--audit-interval-ms", "0"]);
const off = await startTestProxy(w.hs.url, ["--detect", "off", "--audit-interval-ms", "0"]);
const token = w.login("alice", "ALICE");

// 1. to_device of 100 Olm events from a known sender (the common case: each is looked up).
const bob = makeUser(`@bob:${w.remote.serverName}`, { devices: ["DEV0"] });
const curve = (bob.devices[0]!.keys as { keys: Record<string, string> }).keys["curve25519:DEV0"]!;
const events = Array.from({ length: 100 }, (_, i) => ({ sender: bob.userId, type: "m.room.encrypted", content: { algorithm: "m.olm.v1.curve25519-aes-sha2", sender_key: curve, ciphertext: { X: { type: 1, body: fakeB64(300, i) } } } }));
const syncBody = JSON.stringify({ next_batch: "n1", rooms: {}, to_device: { events } });
w.hs.on("/_matrix/client/v3/sync", (_req, res) => {
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(syncBody) });
  res.end(syncBody);
});
w.hs.on("/_matrix/client/v3/keys/query", (_req, res) => {
  const b = JSON.stringify({ device_keys: { [bob.userId]: { DEV0: bob.devices[0]!.keys } }, master_keys: { [bob.userId]: bob.masterKey }, self_signing_keys: { [bob.userId]: bob.selfSigningKey } });
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(b) });
  res.end(b);
});
await timed(w.proxy.url, "/_matrix/client/v3/keys/query", token, JSON.stringify({ device_keys: { [bob.userId]: [] } }));
const on: number[] = [], plain: number[] = [];
for (let i = 0; i < samples + 50; i++) {
  const [, a] = await timed(w.proxy.url, "/_matrix/client/v3/sync?since=s&timeout=0", token);
  const [, b] = await timed(off.url, "/_matrix/client/v3/sync?since=s&timeout=0", token);
  if (i >= 50) (on.push(a), plain.push(b));
}
console.log(`1. /sync with 100 to-device events (${Buffer.byteLength(syncBody)} bytes), ${samples} samples each`);
console.log(`   detect on : p50 ${ms(pct(on, 50))}  p99 ${ms(pct(on, 99))}`);
console.log(`   detect off: p50 ${ms(pct(plain, 50))}  p99 ${ms(pct(plain, 99))}`);
console.log(`   extra p99 : ${ms(pct(on, 99) - pct(plain, 99))}`);

// 1a. The reading itself, per body, in isolation: the watch over the body's chunks and the
// clues it finds (the checks against the view then cost a cache lookup per sender).
const bodyBytes = Buffer.from(syncBody);
const readMs: number[] = [];
for (let i = 0; i < samples + 50; i++) {
  const t = performance.now();
  await new Promise<void>((resolve) => {
    const watch = new ToDeviceWatch(() => resolve());
    for (let k = 0; k < bodyBytes.length; k += 16_384) watch.data(bodyBytes, k, Math.min(bodyBytes.length, k + 16_384));
    watch.end();
  });
  if (i >= 50) readMs.push(performance.now() - t);
}
console.log(`   the reading alone (after the body went out; 16 KiB reads): p50 ${ms(pct(readMs, 50))}  p99 ${ms(pct(readMs, 99))}`);

// 1b. The common /sync: a small answer with no to-device event of a checked type (never scanned).
const quietBody = JSON.stringify({ next_batch: "n2", rooms: { join: { "!r:hs.test": { timeline: { events: [{ type: "m.room.message", sender: "@x:hs.test", content: { body: "hello" } }] } } } }, to_device: { events: [] } });
w.hs.on("/_matrix/client/v3/sync", (_req, res) => {
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(quietBody) });
  res.end(quietBody);
});
const qOn: number[] = [], qOff: number[] = [];
for (let i = 0; i < samples + 50; i++) {
  const [, a2] = await timed(w.proxy.url, "/_matrix/client/v3/sync?since=s&timeout=0", token);
  const [, b2] = await timed(off.url, "/_matrix/client/v3/sync?since=s&timeout=0", token);
  if (i >= 50) (qOn.push(a2), qOff.push(b2));
}
console.log(`1b. a small /sync with no checked to-device event (${Buffer.byteLength(quietBody)} bytes), ${samples} samples each`);
console.log(`   detect on : p50 ${ms(pct(qOn, 50))}  p99 ${ms(pct(qOn, 99))}`);
console.log(`   detect off: p50 ${ms(pct(qOff, 50))}  p99 ${ms(pct(qOff, 99))}`);

// 2. A 1000-device /keys/query answer.
const big = `@big:${w.remote.serverName}`;
const answer = keysQueryAnswer([big], 1000);
const answerText = JSON.stringify(answer);
w.hs.on("/_matrix/client/v3/keys/query", (_req, res) => {
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(answerText) });
  res.end(answerText);
});
const q = JSON.stringify({ device_keys: { [big]: [] } });
const firstOn: number[] = [], firstOff: number[] = [], learn: number[] = [], digest: number[] = [];
const answerBytes = Buffer.from(answerText);
for (let i = 0; i < Math.min(samples, 200) + 20; i++) {
  const [a] = await timed(w.proxy.url, "/_matrix/client/v3/keys/query", token, q);
  const [b] = await timed(off.url, "/_matrix/client/v3/keys/query", token, q);
  // What runs after the answer went out: a digest of the bytes (an answer seen before stops
  // here), and for a new answer the parse and the view.
  const t = performance.now();
  createHash("sha1").update(answerBytes).digest("base64");
  const d = performance.now() - t;
  viewsFromAnswer(JSON.parse(answerText) as Record<string, unknown>, { [big]: [] }, [big], Date.now());
  const l = performance.now() - t;
  digest.push(d);
  if (i >= 20) (firstOn.push(a), firstOff.push(b), learn.push(l));
}
console.log(`2. /keys/query answer of 1000 devices (${answerText.length} bytes), ${firstOn.length} samples`);
console.log(`   first byte, learning on : p50 ${ms(pct(firstOn, 50))}  p99 ${ms(pct(firstOn, 99))}`);
console.log(`   first byte, --detect off: p50 ${ms(pct(firstOff, 50))}  p99 ${ms(pct(firstOff, 99))}  (the view is learned either way; off only stops detection)`);
console.log(`   after the answer went out, a repeated answer (digest only): p50 ${ms(pct(digest, 50))}  p99 ${ms(pct(digest, 99))}`);
console.log(`   after the answer went out, a new answer read in this thread (digest + parse + view): p50 ${ms(pct(learn, 50))}  p99 ${ms(pct(learn, 99))}`);
// 2b. The same with the reading thread (what the proxy does): the main thread's share is the copy
// handed to the thread and recording the views it sends back (a store write).
const parser = new ViewParser({ url: new URL("../src/view-worker.ts", import.meta.url), log: createLogger("error") });
const viewStore = await openSqliteStore(mkdtempSync(join(tmpdir(), "bench-views-")));
const views = new Views({ store: viewStore, paths: undefined as never, log: createLogger("error") });
const mainShare: number[] = [];
for (let i = 0; i < Math.min(samples, 200) + 20; i++) {
  const fresh = Buffer.from(JSON.stringify(keysQueryAnswer([big], 1000, { generation: i })));
  const t = performance.now();
  const pending = parser.summarize([fresh], { [big]: [] }, [big]);
  const send = performance.now() - t;
  const summary = await pending;
  const t2 = performance.now();
  if (typeof summary === "object") views.record(summary.views);
  if (i >= 20) mainShare.push(send + performance.now() - t2);
}
parser.close();
viewStore.close();
console.log(`   a new answer, read in the reading thread: main thread's share (copy + record) p50 ${ms(pct(mainShare, 50))}  p99 ${ms(pct(mainShare, 99))}`);
await off.close();
await w.close();

// 3. The audit of 10,000 tracked users at 2/s.
const a = await startWorld(["--audit-interval-ms", "1000", "--audit-max-per-second", "2", "--rate-target-burst", "100"]);
const store = a.proxy.services.store;
const users = Array.from({ length: 10_000 }, (_, i) => `@u${i}:${a.remote.serverName}`);
for (let i = 0; i < users.length; i += 500) store.track("@alice:hs.test", "ALICE", users.slice(i, i + 500), Date.now());
for (const u of users.slice(0, 200)) a.remote.setUser(makeUser(u, { devices: ["D"] }));
await a.restartProxy(["--audit-interval-ms", "1000", "--audit-max-per-second", "2"]); // a pass starts with all 10,000 counted
await new Promise((r) => setTimeout(r, 3_000));
const seen0 = a.remote.count({ endpoint: "devices" });
const rss0 = process.memoryUsage().rss;
const cpu0 = process.cpuUsage();
const t0 = performance.now();
await new Promise((r) => setTimeout(r, auditSeconds * 1000));
const cpu = process.cpuUsage(cpu0);
const wall = performance.now() - t0;
const checked = a.remote.count({ endpoint: "devices" }) - seen0;
console.log(`3. audit of 10,000 tracked users at --audit-max-per-second 2, ${auditSeconds} s window`);
console.log(`   federation fetches seen by the remote: ${checked} (${(checked / (wall / 1000)).toFixed(2)}/s)`);
console.log(`   CPU: ${(((cpu.user + cpu.system) / 1000 / wall) * 100).toFixed(2)} % of one core (proxy + fake remote in one process)`);
console.log(`   RSS growth over the window: ${((process.memoryUsage().rss - rss0) / 1048576).toFixed(1)} MB`);
await a.close();
process.exit(0);
