// How long one hostile /keys/query stalls the proxy (issue 16 item 5): a 4 MB body naming
// 150,000 made-up remote users (relayed unread: over the 256 KiB the proxy parses), and the
// worst body it does parse, just under 256 KiB (about 10,000 short user ids), each sent again and again
// while an unrelated client keeps asking for /versions. Prints the proxy's largest event-loop delay (perf_hooks
// monitorEventLoopDelay) and the unrelated requests' slowest answer, per engine. The proxy
// runs in this process (so the monitor sees its loop); the homeserver is a child process.
// Usage: npx bun scripts/bench-tracking.ts [rounds]   (default 10)
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { parseCli } from "../src/config/config.ts";
import { createLogger } from "../src/observe/log.ts";
import { startProxy } from "../src/commands/serve.ts";

const ROUNDS = Number(process.argv[2] ?? 10);
const USERS = 150_000;

// The homeserver: whoami for one token, an empty answer to /keys/query (its body counted, not
// parsed), /versions. In its own process, so its work is not in our event loop.
const HOMESERVER = `
import http from "node:http";
const json = (res, s, b) => { const t = JSON.stringify(b); res.writeHead(s, { "content-type": "application/json", "content-length": Buffer.byteLength(t) }); res.end(t); };
http.createServer((req, res) => {
  const path = req.url.split("?")[0];
  req.on("data", () => {});
  req.on("end", () => {
    if (path === "/_matrix/client/versions") return json(res, 200, { versions: ["v1.11"] });
    if (req.headers.authorization !== "Bearer bench") return json(res, 401, { errcode: "M_UNKNOWN_TOKEN", error: "no" });
    if (path === "/_matrix/client/v3/account/whoami") return json(res, 200, { user_id: "@bench:hs.test", device_id: "BENCH" });
    if (path === "/_matrix/client/v3/keys/query") return json(res, 200, { device_keys: {}, failures: {} });
    json(res, 404, { errcode: "M_UNRECOGNIZED", error: "no" });
  });
}).listen(0, "127.0.0.1", function () { console.log(this.address().port); });
`;

async function startHomeserver(): Promise<{ url: string; stop(): void }> {
  const dir = mkdtempSync(join(tmpdir(), "bench-tracking-"));
  const file = join(dir, "hs.mjs");
  writeFileSync(file, HOMESERVER);
  const child = spawn(process.execPath, [file], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<string>((resolve) =>
    child.stdout.once("data", (d: Buffer) => resolve(d.toString().trim())),
  );
  return { url: `http://127.0.0.1:${port}`, stop: () => child.kill() };
}

function configFor(upstream: string, engine: string, extra: string[]) {
  const dir = mkdtempSync(join(tmpdir(), "bench-tracking-"));
  writeFileSync(join(dir, "k"), "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n");
  const a = parseCli(
    [
      "--upstream",
      upstream,
      "--server-name",
      "hs.test",
      "--signing-key",
      join(dir, "k"),
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      join(dir, "data"),
      "--log-level",
      "error",
      "--engine",
      engine,
      ...extra,
    ],
    {},
  );
  if (a.kind !== "run") throw new Error("bad config");
  return a.config;
}

async function measure(engine: string, label: string, extra: string[], body: string, what: string): Promise<string> {
  const hs = await startHomeserver();
  const proxy = await startProxy(
    configFor(hs.url, engine, extra),
    createLogger("error", () => {}),
  );
  const url = `http://127.0.0.1:${proxy.address.split(":").pop()}`;
  // Warm up: the whoami cache, the connection pools, the JIT.
  await (await fetch(`${url}/_matrix/client/versions`)).text();
  await (
    await fetch(`${url}/_matrix/client/v3/keys/query`, {
      method: "POST",
      headers: { authorization: "Bearer bench" },
      body: '{"device_keys":{}}',
    })
  ).text();

  const h = monitorEventLoopDelay({ resolution: 5 });
  h.enable();
  // A second witness: how late a 5 ms timer fires (Bun's monitorEventLoopDelay may sample
  // differently from Node's; the two together leave no doubt).
  let drift = 0;
  let due = performance.now() + 5;
  const probe = setInterval(() => {
    const now = performance.now();
    drift = Math.max(drift, now - due);
    due = now + 5;
  }, 5);
  let done = false;
  let slowest = 0;
  const unrelated = (async () => {
    while (!done) {
      const t = performance.now();
      await (await fetch(`${url}/_matrix/client/versions`)).text();
      slowest = Math.max(slowest, performance.now() - t);
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  for (let i = 0; i < ROUNDS; i++) {
    const r = await fetch(`${url}/_matrix/client/v3/keys/query`, {
      method: "POST",
      headers: { authorization: "Bearer bench" },
      body,
    });
    await r.text();
    if (r.status !== 200) throw new Error(`keys/query answered ${r.status}`);
  }
  await proxy.services.delivery.trackers.idle();
  await new Promise((r) => setTimeout(r, 50));
  done = true;
  await unrelated;
  h.disable();
  clearInterval(probe);
  const rows = (await proxy.services.store.trackerCounts()).reduce((n, c) => n + c.count, 0);
  await proxy.close(1000);
  hs.stop();
  const ms = (ns: number) => (ns / 1e6).toFixed(1);
  return `| ${engine} | ${what} | ${label} | ${ms(h.max)} | ${drift.toFixed(1)} | ${ms(h.percentile(99))} | ${slowest.toFixed(1)} | ${rows} |`;
}

const queryOf = (n: number) =>
  JSON.stringify({
    device_keys: Object.fromEntries(Array.from({ length: n }, (_, i) => [`@u${i}:x${i % 997}.invalid`, []])),
  });
const huge = queryOf(USERS);
let n = 5_000;
while (queryOf(n + 500).length < 256 * 1024) n += 500;
const parsed = queryOf(n);
const kb = (s: string) => `${Math.round(s.length / 1024)} KiB`;
console.log(`${ROUNDS} × POST /keys/query per row, beside /versions requests every 5 ms\n`);
console.log(
  "| engine | query body | tracking caps | max event-loop delay (ms) | max 5 ms timer lateness (ms) | p99 delay (ms) | slowest /versions (ms) | tracker rows |",
);
console.log("|---|---|---|---|---|---|---|---|");
const engines = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined" ? ["bun", "node"] : ["node"];
const NO_CAPS = ["--max-tracked-per-query", "1000000", "--max-trackers-per-device", "10000000"];
for (const engine of engines) {
  console.log(await measure(engine, "defaults", [], huge, `${kb(huge)}, ${USERS} users`));
  console.log(await measure(engine, "defaults", [], parsed, `${kb(parsed)}, ${n} users`));
  console.log(await measure(engine, "none", NO_CAPS, parsed, `${kb(parsed)}, ${n} users`));
}
process.exit(0);
