// Self-healing's costs (docs/performance.md "Self-healing"), figures beside each budget, no
// thresholds. Every proxy is a child process of its own (`bun src/main.ts`, the real CLI flags);
// the fake homeserver and the fake remote run in this process, so each proxy's CPU and RSS are its
// own (/proc/<pid>/stat and /status). Each part runs `rounds` times; the medians and the ranges
// over the rounds are printed.
//   1. /sync with a `to_device` member of 100 events, through two proxies (--detect on, off)
//      alternately against one fake homeserver: per-request time, p50 and p99;
//   2. learning the homeserver's view from a 1000-device /keys/query answer: time to the first
//      byte through both proxies, and the main thread's share of learning (in this process);
//   3. the audit of 10,000 tracked users at 2/s against the fake remote: the proxy's CPU share
//      and RSS growth; then (3b) a second proxy's RSS over one whole pass of the 10,000.
// Usage: npx bun scripts/bench-heal.ts [samples] [auditSeconds] [rounds] [only]      (binds 127.0.0.1 only)
// `only` = 1 runs part 1 alone; 3 runs part 3 alone (at 2/s: a long auditSeconds, RSS at the end
// of each of `rounds` windows); 3b runs part 3b alone. In part 1 the proxies are asked in turn per request (in a
// shuffled order), and p99 is also given over all rounds' requests pooled (samples × rounds).
// BENCH_HEAL_BASE=<commit>[,<commit>…] adds to part 1 a --detect on proxy run from each commit's
// source (or from a directory holding a src/), asked in the same turns: before and after side
// by side in one run. BENCH_HEAL_GC=1 has part 1's proxies log their collections (JSC's
// BUN_JSC_logGC) and counts them per 1,000 requests: a young collection is the usual p99 request.
// BENCH_PROFILE=dir runs the proxies under Bun's sampling profiler (scripts/bench/profile-summary.ts).
// BENCH_HEAL_SMOL=1 runs every proxy with `bun --smol`. BENCH_HEAL_PROGRESS=1 prints part 3's RSS at each window (and its peak since the start of the part).
import { execSync } from "node:child_process";
import { existsSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { keysQueryAnswer, fakeB64 } from "../test/helpers/bodies.ts";
import { makeUser } from "../test/helpers/fake-devices.ts";
import { startFakeHomeserver } from "../test/helpers/fake-homeserver.ts";
import { startFakeRemote } from "../test/helpers/fake-remote.ts";
import { writeTestKey } from "../test/helpers/proxy.ts";
import { createTestCa } from "../test/helpers/tls.ts";
import { OUR_KEY_ID, OUR_PUBLIC_KEY } from "../test/helpers/world.ts";
import { ViewParser } from "../src/delivery/view-parser.ts";
import { ToDeviceWatch } from "../src/delivery/to-device-watch.ts";
import { cluesOf } from "../src/delivery/to-device-clues.ts";
import { viewsFromAnswer } from "../src/delivery/hs-view.ts";
import { Detector } from "../src/resync/detect.ts";
import type { Requester } from "../src/http/auth.ts";
import { Views } from "../src/delivery/views.ts";
import { createLogger } from "../src/observe/log.ts";
import { openSqliteStore } from "../src/store/sqlite.ts";
import { BUN, ROOT, tempDir } from "./bench/binary.ts";
import { cpuSeconds, peakRssBytes, resetPeakRss, rssBytes, rssSplit, startProc } from "./bench/procs.ts";
import { heapLine, heapOf, mb, wholePasses } from "./bench/audit-pass.ts";

const samples = Number(process.argv[2] ?? 400);
const auditSeconds = Number(process.argv[3] ?? 30);
const rounds = Number(process.argv[4] ?? 3);
const only = process.argv[5];
const pct = (a: number[], p: number) =>
  [...a].sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor((p / 100) * a.length))]!;
const ms = (n: number) => `${n.toFixed(3)} ms`;
/** "median (min–max)" of one figure over the rounds. */
const over = (xs: number[], f: (n: number) => string = ms) =>
  `${f(pct(xs, 50))} (${f(Math.min(...xs))} … ${f(Math.max(...xs))})`;

/** One request; resolves with [ms to the first body byte, ms to the end]. */
function timed(url: string, path: string, token: string, body?: string): Promise<[number, number]> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let first = 0;
    const u = new URL(url);
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        path,
        method: body ? "POST" : "GET",
        headers: {
          authorization: `Bearer ${token}`,
          ...(body ? { "content-type": "application/json", "content-length": Buffer.byteLength(body) } : {}),
        },
        agent: false,
      },
      (res) => {
        res.on("data", () => void (first ||= performance.now() - t0));
        res.on("end", () => resolve([first, performance.now() - t0]));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

const ca = createTestCa();
const caPath = join(mkdtempSync(join(tmpdir(), "bench-heal-")), "ca.pem");
writeFileSync(caPath, ca.caPem);
const hs = await startFakeHomeserver("hs.test");
const remote = await startFakeRemote({ ca, trustedKeys: { "hs.test": { [OUR_KEY_ID]: OUR_PUBLIC_KEY } } });

/** A proxy in a process of its own, from source, in front of the fake homeserver. */
async function proxyChild(
  flags: string[],
  dataDir = mkdtempSync(join(tmpdir(), "bench-heal-data-")),
  root = ROOT,
  entry = join(root, "src", "main.ts"),
) {
  const profile = process.env.BENCH_PROFILE;
  const pre = profile ? ["--cpu-prof", `--cpu-prof-dir=${profile}`, "--cpu-prof-interval=200"] : [];
  // BENCH_HEAL_SMOL=1: Bun's documented --smol (JSC's small heap sizing, collecting more often).
  if (process.env.BENCH_HEAL_SMOL) pre.push("--smol");
  const gcLog = process.env.BENCH_HEAL_GC ? { env: { BUN_JSC_logGC: "1" }, tailLines: 1_000_000 } : {};
  const p = startProc(
    BUN,
    [
      ...pre,
      entry,
      "--upstream",
      hs.url,
      "--server-name",
      "hs.test",
      "--signing-key",
      writeTestKey(),
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      dataDir,
      "--log-level",
      "info",
      "--federation-ca",
      caPath,
      "--federation-allow-cidrs",
      "127.0.0.0/8",
      ...flags,
    ],
    gcLog,
  );
  const m = await p.waitLine(/"msg":"listening".*"listen":"127\.0\.0\.1:(\d+)"/);
  return { pid: p.pid, proc: p, url: `http://127.0.0.1:${m[1]}`, stop: () => p.stop(5000) };
}

// 3. The audit of 10,000 tracked users at 2/s: trackers written before the proxy starts, so a
// pass starts with all 10,000 counted. The remote serves each of them a one-device list, as a
// live server would: BENCH_HEAL_KNOWN=200 serves only the first 200 (the others get an empty
// list: for a proxy with no record of the homeserver's answer, each is a heal stored and
// delivered), as this bench did before the ninth session.
const users = Array.from({ length: 10_000 }, (_, i) => `@u${i}:${remote.serverName}`);
const known = users.slice(0, Number(process.env.BENCH_HEAL_KNOWN ?? users.length)).map((u) => {
  const f = makeUser(u, { devices: ["D"] });
  remote.setUser(f);
  return f;
});
/**
 * What the homeserver served for each known user: trackers are written from /keys/query answers,
 * and the proxy learns the homeserver's view from the same answers (delivery/views.ts). Unset
 * with BENCH_HEAL_VIEWS=0: with no record to compare with, every check is a heal.
 */
const hsViews = known.flatMap((f) =>
  process.env.BENCH_HEAL_VIEWS === "0"
    ? []
    : viewsFromAnswer(
        {
          device_keys: { [f.userId]: Object.fromEntries(f.devices.map((d) => [d.device_id, d.keys])) },
          master_keys: { [f.userId]: f.masterKey },
          self_signing_keys: { [f.userId]: f.selfSigningKey },
        },
        { [f.userId]: [] },
        [f.userId],
        Date.now(),
      ),
);
/** A data directory with the 10,000 trackers written. */
async function trackedDir(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "bench-heal-audit-"));
  const pre = await openSqliteStore(dir);
  for (let i = 0; i < users.length; i += 500)
    await pre.track("@alice:hs.test", "ALICE", users.slice(i, i + 500), Date.now());
  await pre.putViews(hsViews);
  await pre.close();
  return dir;
}
/** The proxy's CLI with a look at its heap on request (bench only). */
const STATS_MAIN = join(ROOT, "scripts", "bench", "stats-main.ts");
// 3b. Memory over whole passes (scripts/bench/audit-pass.ts): 30 s at 2/s is 60 of the 10,000
// checks, too few to show what a pass leaves behind. A second proxy, on trackers of its own,
// spreads each pass over BENCH_HEAL_PASS_S (default 50 s: 200/s; 500 s is 20/s, the audit's even
// pace, nearer the 2/s of the budget) and walks BENCH_HEAL_PASSES passes (default 2). CPU here
// is per the faster pace, not the 2/s budget. `only` = 3b runs this part alone.
async function part3b(): Promise<void> {
  const passMs = Number(process.env.BENCH_HEAL_PASS_S ?? 50) * 1000;
  const start = (flags: string[], dir: string) => proxyChild(flags, dir, ROOT, STATS_MAIN);
  await wholePasses(
    { remote, users, dataDir: await trackedDir(), start },
    passMs,
    Number(process.env.BENCH_HEAL_PASSES ?? 2),
  );
}
if (only === "3" || only === "3b") {
  await (only === "3" ? part3() : part3b());
  await remote.close();
  await hs.close();
  ca.cleanup();
  process.exit(0);
}

const token = "token_alice";
hs.tokens.set(token, ["@alice:hs.test", "ALICE"]);
const on = await proxyChild(["--audit-interval-ms", "0"]);
const off = await proxyChild(["--detect", "off", "--audit-interval-ms", "0"]);
/** A commit's source beside ours, for a proxy run from it (node_modules shared). */
function sourceOf(ref: string): string {
  if (existsSync(join(ref, "src", "main.ts"))) return ref;
  const dir = tempDir(tmpdir(), "bench-heal-base-");
  execSync(`git -C '${ROOT}' archive '${ref}' src package.json tsconfig.json | tar -x -C '${dir}'`);
  symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"));
  return dir;
}
const bases = await Promise.all(
  (process.env.BENCH_HEAL_BASE?.split(",") ?? []).map(async (ref) => ({
    name: `on ${ref.split("/").pop()}`,
    ...(await proxyChild(["--audit-interval-ms", "0"], undefined, sourceOf(ref))),
  })),
);
const arms = [{ name: "detect on", ...on }, { name: "detect off", ...off }, ...bases];
const serve = (path: string, body: () => string) =>
  hs.on(path, (_req, res) => {
    const b = body();
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(b) });
    res.end(b);
  });

// 1. to_device of 100 Olm events from a known sender (the common case: each is looked up).
const bob = makeUser(`@bob:${remote.serverName}`, { devices: ["DEV0"] });
const curve = (bob.devices[0]!.keys as { keys: Record<string, string> }).keys["curve25519:DEV0"]!;
const events = Array.from({ length: 100 }, (_, i) => ({
  sender: bob.userId,
  type: "m.room.encrypted",
  content: {
    algorithm: "m.olm.v1.curve25519-aes-sha2",
    sender_key: curve,
    ciphertext: { X: { type: 1, body: fakeB64(300, i) } },
  },
}));
const syncBody = JSON.stringify({ next_batch: "n1", rooms: {}, to_device: { events } });
const quietBody = JSON.stringify({
  next_batch: "n2",
  rooms: {
    join: {
      "!r:hs.test": {
        timeline: { events: [{ type: "m.room.message", sender: "@x:hs.test", content: { body: "hello" } }] },
      },
    },
  },
  to_device: { events: [] },
});
let current = syncBody;
serve("/_matrix/client/v3/sync", () => current);
serve("/_matrix/client/v3/keys/query", () =>
  JSON.stringify({
    device_keys: { [bob.userId]: { DEV0: bob.devices[0]!.keys } },
    master_keys: { [bob.userId]: bob.masterKey },
    self_signing_keys: { [bob.userId]: bob.selfSigningKey },
  }),
);
for (const p of arms)
  await timed(p.url, "/_matrix/client/v3/keys/query", token, JSON.stringify({ device_keys: { [bob.userId]: [] } }));

/**
 * One round of /sync requests, each step asking every proxy once in a shuffled order, so each
 * follows each as often (a proxy's work after its answer overlaps the next request, on the
 * next proxy's cores): per proxy, every request's time to the end (ms), and its CPU per request
 * (ms, all threads).
 */
async function syncRound(): Promise<Round> {
  const times: number[][] = arms.map(() => []);
  let c0: number[] = [],
    log0: number[] = [];
  for (let i = 0; i < samples + 50; i++) {
    if (i === 50) (c0 = arms.map((a) => cpuSeconds(a.pid))), (log0 = arms.map((a) => a.proc.tail.length));
    const order = arms.map((_, j) => j);
    for (let k = order.length - 1; k > 0; k--) {
      const r = Math.floor(Math.random() * (k + 1));
      [order[k], order[r]] = [order[r]!, order[k]!];
    }
    for (const j of order) {
      const [, x] = await timed(arms[j]!.url, "/_matrix/client/v3/sync?since=s&timeout=0", token);
      if (i >= 50) times[j]!.push(x);
    }
  }
  const cpu = arms.map((a, j) => ((cpuSeconds(a.pid) - c0[j]!) / samples) * 1000);
  if (!process.env.BENCH_HEAL_GC) return { times, cpu, gc: [] };
  await new Promise((r) => setTimeout(r, 100)); // the last lines
  return { times, cpu, gc: arms.map((a, j) => collections(a.proc.tail.slice(log0[j]))) };
}
interface Round {
  times: number[][];
  cpu: number[];
  /** Per proxy (BENCH_HEAL_GC): [collections per 1,000 requests, median ms of one]. */
  gc: number[][];
}
// One collection's summary, e.g. "START M 51996kb => EdenCollection, … => 35637kb, p=1.66ms (max 3.4), cycle 7.98ms".
const GC_LINE = /START M \d+kb => (Eden|Full)Collection[\s\S]*?=> \d+kb, p=[\d.]+ms \(max [\d.]+\), cycle ([\d.]+)ms/g;
function collections(lines: string[]): number[] {
  const log = lines.join("\n").replaceAll("\0", "").replace(/\s+/g, " ");
  const ms = [...log.matchAll(GC_LINE)].map((m) => Number(m[2]));
  return [(ms.length / samples) * 1000, ms.length > 0 ? pct(ms, 50) : 0];
}
const us = (n: number) => `${(n * 1000).toFixed(0)} µs`;
/** Per proxy: p50 and p99 over the rounds (median, range) and over all rounds' requests pooled. */
function printSync(title: string, r: Round[]) {
  console.log(title);
  const p = (j: number, q: number) => r.map((x) => pct(x.times[j]!, q));
  const pooled = (j: number, q: number) =>
    pct(
      r.flatMap((x) => x.times[j]!),
      q,
    );
  const gc = (j: number) =>
    r[0]!.gc.length === 0
      ? ""
      : `; collections per 1,000 requests ${over(
          r.map((x) => x.gc[j]![0]!),
          (n) => n.toFixed(1),
        )}, ${ms(
          pct(
            r.map((x) => x.gc[j]![1]!),
            50,
          ),
        )} each`;
  arms.forEach((a, j) =>
    console.log(
      `   ${a.name.padEnd(10)}: p50 ${over(p(j, 50))}  p99 ${over(p(j, 99))}, pooled ${ms(pooled(j, 99))}; CPU/request ${over(
        r.map((x) => x.cpu[j]!),
        us,
      )}${gc(j)}`,
    ),
  );
  arms.forEach((a, j) => {
    if (a.name === "detect off") return;
    const less = (xs: number[], ys: number[]) => xs.map((x, k) => x - ys[k]!);
    const off = arms.findIndex((b) => b.name === "detect off");
    console.log(
      `   extra (${a.name}): p50 ${over(less(p(j, 50), p(off, 50)))}  p99 ${over(less(p(j, 99), p(off, 99)))}, pooled ${ms(pooled(j, 99) - pooled(off, 99))}; CPU ${over(
        less(
          r.map((x) => x.cpu[j]!),
          r.map((x) => x.cpu[off]!),
        ),
        us,
      )}`,
    );
  });
}
const loud: Round[] = [],
  quiet: Round[] = [];
for (let k = 0; k < rounds; k++) {
  current = syncBody;
  loud.push(await syncRound());
  current = quietBody;
  quiet.push(await syncRound());
}
printSync(
  `1. /sync with 100 to-device events (${Buffer.byteLength(syncBody)} bytes), ${samples} samples × ${rounds} rounds; median (min … max) over rounds`,
  loud,
);
console.log("   budget: extra p99 ≤ 1 ms");
printSync(`1b. a small /sync with no checked to-device event (${Buffer.byteLength(quietBody)} bytes)`, quiet);

// 1a. The reading itself, per body, in isolation (this process).
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
console.log(
  `1a. the reading alone, in this process (after the body went out; 16 KiB reads): p50 ${ms(pct(readMs, 50))}  p99 ${ms(pct(readMs, 99))}`,
);
// 1c. The checks of those clues against the homeserver's view (src/resync/detect.ts), in this
// process: the sender known, every event from a known device (nothing to suspect).
{
  const store = await openSqliteStore(mkdtempSync(join(tmpdir(), "bench-detect-")));
  const dviews = new Views({ store, paths: undefined as never, log: createLogger("error") });
  dviews.record(
    viewsFromAnswer(
      { device_keys: { [bob.userId]: { DEV0: bob.devices[0]!.keys } } },
      { [bob.userId]: [] },
      [bob.userId],
      Date.now(),
    ),
  );
  const detector = new Detector({
    serverName: "hs.test",
    resyncer: undefined as never,
    views: dviews,
    store,
    track: () => {},
    log: createLogger("error"),
  });
  const clues = cluesOf((JSON.parse(syncBody) as { to_device: unknown }).to_device);
  const who = { userId: "@alice:hs.test", deviceId: "ALICE", token } as Requester;
  const checkMs: number[] = [];
  for (let i = 0; i < samples * 5 + 50; i++) {
    const t = performance.now();
    await detector.toDevice(who, clues);
    if (i >= 50) checkMs.push(performance.now() - t);
  }
  console.log(
    `1c. the checks of its ${clues.length} clues against the view, in this process: p50 ${ms(pct(checkMs, 50))}  p99 ${ms(pct(checkMs, 99))}`,
  );
  await dviews.close();
  await store.close();
}

if (only === "1") {
  for (const a of arms) await a.stop();
  await remote.close();
  await hs.close();
  ca.cleanup();
  process.exit(0);
}
for (const b of bases) await b.stop();

// 2. A 1000-device /keys/query answer, new each time (a repeated one is only digested).
const big = `@big:${remote.serverName}`;
// Four answers served in turn, made beforehand (making one here costs more than relaying it):
// each differs from the last, so each is read and its view recorded.
const answers = Array.from({ length: 4 }, (_, g) => JSON.stringify(keysQueryAnswer([big], 1000, { generation: g })));
let gen = 0;
serve("/_matrix/client/v3/keys/query", () => answers[gen++ % answers.length]!);
const q = JSON.stringify({ device_keys: { [big]: [] } });
const first: number[][] = [];
const n2 = Math.min(samples, 200);
for (let k = 0; k < rounds; k++) {
  const a: number[] = [],
    b: number[] = [];
  for (let i = 0; i < n2 + 20; i++) {
    const [x] = await timed(on.url, "/_matrix/client/v3/keys/query", token, q);
    const [y] = await timed(off.url, "/_matrix/client/v3/keys/query", token, q);
    if (i >= 20) a.push(x), b.push(y);
  }
  first.push([pct(a, 50), pct(a, 99), pct(b, 50), pct(b, 99)]);
}
console.log(`2. /keys/query answer of 1000 devices, new each time, ${n2} samples × ${rounds} rounds`);
console.log(`   first byte, detect on : p50 ${over(first.map((x) => x[0]!))}  p99 ${over(first.map((x) => x[1]!))}`);
console.log(
  `   first byte, detect off: p50 ${over(first.map((x) => x[2]!))}  p99 ${over(first.map((x) => x[3]!))}  (both learn the view)`,
);
// 2b. The main thread's share of learning (what the proxy does, here in this process): the copy
// handed to the reading thread and recording the views it sends back; the coalesced write of the
// views that changed (once a second, one transaction) is timed apart.
const parser = new ViewParser({ url: new URL("../src/view-worker.ts", import.meta.url), log: createLogger("error") });
const viewStore = await openSqliteStore(mkdtempSync(join(tmpdir(), "bench-views-")));
const views = new Views({
  store: viewStore,
  paths: undefined as never,
  log: createLogger("error"),
  flushMs: 3_600_000,
});
const share: number[][] = [],
  cpuShare: number[][] = [],
  flushes: number[] = [];
// The event loop's own CPU per answer (process.threadCpuUsage: this thread only), which also
// counts decoding the reading thread's reply, a cost the two timed sections do not see.
const threadCpu = () => {
  const u = process.threadCpuUsage();
  return (u.user + u.system) / 1000;
};
for (let k = 0; k < rounds; k++) {
  const main: number[] = [],
    cpu: number[] = [];
  for (let i = 0; i < n2 + 20; i++) {
    const fresh = Buffer.from(answers[i % answers.length]!);
    const c0 = threadCpu();
    const t = performance.now();
    const pending = parser.summarize([fresh], { [big]: [] }, [big]);
    const send = performance.now() - t;
    const summary = await pending;
    const t2 = performance.now();
    if (typeof summary === "object") views.record(summary.views);
    if (i >= 20) main.push(send + performance.now() - t2), cpu.push(threadCpu() - c0);
    if (i % 20 === 19) {
      const t3 = performance.now();
      await views.flush();
      flushes.push(performance.now() - t3);
    }
  }
  share.push([pct(main, 50), pct(main, 99)]);
  cpuShare.push([pct(cpu, 50), pct(cpu, 99)]);
}
parser.close();
await views.close();
await viewStore.close();
console.log(
  `   main thread's share of a new answer (copy + record): p50 ${over(share.map((x) => x[0]!))}  p99 ${over(share.map((x) => x[1]!))}   budget: ≤ 2 ms p99`,
);
console.log(
  `   the event loop's CPU per new answer (thread CPU time, reply decoding included): p50 ${over(cpuShare.map((x) => x[0]!))}  p99 ${over(cpuShare.map((x) => x[1]!))}`,
);
console.log(
  `   the coalesced write of a changed 1000-device view (once a second at most, a timer of its own): p50 ${ms(pct(flushes, 50))}  p99 ${ms(pct(flushes, 99))}`,
);
await on.stop();
await off.stop();

async function part3(): Promise<void> {
  const dataDir = await trackedDir();
  const audit = await proxyChild(
    ["--audit-interval-ms", "1000", "--audit-max-per-second", "2"],
    dataDir,
    ROOT,
    STATS_MAIN,
  );
  await new Promise((r) => setTimeout(r, 3_000));
  const seen0 = remote.count({ endpoint: "devices" });
  const rss0 = rssBytes(audit.pid);
  const split0 = rssSplit(audit.pid);
  // The peak from here on (VmHWM, exact between readings), not start-up's.
  const peakReset = resetPeakRss(audit.pid);
  const peak = () => (peakReset ? `, peak so far +${mb(peakRssBytes(audit.pid) - rss0)}` : "");
  const heap0 = await heapOf(audit.proc, "start3");
  const t0 = performance.now();
  const cpu: number[] = [],
    selfCpu: number[] = [],
    rssAt: number[] = [],
    splitAt: string[] = [];
  const windows = Math.max(1, rounds);
  for (let k = 0; k < windows; k++) {
    const c0 = cpuSeconds(audit.pid),
      s0 = cpuSeconds(process.pid),
      w0 = performance.now();
    await new Promise((r) => setTimeout(r, (auditSeconds * 1000) / windows));
    const wall = (performance.now() - w0) / 1000;
    cpu.push(((cpuSeconds(audit.pid) - c0) / wall) * 100);
    selfCpu.push(((cpuSeconds(process.pid) - s0) / wall) * 100);
    rssAt.push(rssBytes(audit.pid) - rss0);
    const split = rssSplit(audit.pid);
    splitAt.push(`${mb(split.anon - split0.anon)}/${mb(split.file - split0.file)}`);
    if (process.env.BENCH_HEAL_PROGRESS)
      console.log(`   window ${k + 1}: RSS +${mb(rssAt.at(-1)!)} (anon/file +${splitAt.at(-1)})${peak()}`);
  }
  const wall = (performance.now() - t0) / 1000;
  const checked = remote.count({ endpoint: "devices" }) - seen0;
  const pc = (n: number) => `${n.toFixed(2)} %`;
  console.log(`3. audit of 10,000 tracked users at --audit-max-per-second 2, ${auditSeconds} s in ${windows} windows`);
  console.log(`   federation fetches seen by the remote: ${checked} (${(checked / wall).toFixed(2)}/s)`);
  console.log(`   proxy CPU (its own process): ${over(cpu, pc)} of one core   budget: < 2 %`);
  console.log(`   (the bench process: fake remote + fake homeserver: ${over(selfCpu, pc)})`);
  console.log(
    `   proxy RSS growth over the ${auditSeconds} s: ${((rssBytes(audit.pid) - rss0) / 1048576).toFixed(1)} MB (RSS ${(rssBytes(audit.pid) / 1048576).toFixed(0)} MB)   budget: < 20 MB`,
  );
  console.log(`   RSS growth at the end of each window: ${rssAt.map(mb).join(", ")}`);
  console.log(`   of which anonymous / file-backed: ${splitAt.join(", ")}${peak()}`);
  const live = await heapOf(audit.proc, "live3", true);
  console.log(`   then after one full collection: ${heapLine(live)}; RSS ${mb(live.rss - rss0)} over the start`);
  console.log(`   heap at the start (not collected) ${mb(heap0.heapSize)}, live at the end ${mb(live.heapSize)}`);
  await audit.stop();
}

await part3();
await part3b();
await remote.close();
await hs.close();
ca.cleanup();
process.exit(0);
