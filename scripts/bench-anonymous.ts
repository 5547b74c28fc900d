// What anonymous clients can make the proxy hold (issue 16 item 2). 40 connections each send
// the head of an 8 MiB POST /keys/query and all but the last byte of its body, without a
// token, with a refused token, or with half a head and nothing more (slowloris); the proxy's
// resident memory is read from /proc before and after, per engine. The proxy runs as its own
// process (`bun src/main.ts`), so nothing of ours is counted.
// Usage: npx bun scripts/bench-anonymous.ts   (Linux: reads /proc/PID/status)
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const CONNECTIONS = 40;
const BODY = 8 * 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// The homeserver refuses every token, as it would a made-up one.
const hs = http.createServer((req, res) => {
  req.resume();
  const body = JSON.stringify({ errcode: "M_UNKNOWN_TOKEN", error: "Unknown token", soft_logout: false });
  res.writeHead(401, { "content-type": "application/json", "content-length": body.length });
  res.end(body);
});
await new Promise<void>((r) => hs.listen(0, "127.0.0.1", r));
const upstream = `http://127.0.0.1:${(hs.address() as net.AddressInfo).port}`;

const rssKiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? NaN);

async function startProxy(engine: string): Promise<{ pid: number; port: number; stop(): void }> {
  const dir = mkdtempSync(join(tmpdir(), "bench-anon-"));
  writeFileSync(join(dir, "k"), "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n");
  const port = 20000 + Math.floor(Math.random() * 20000);
  const child = spawn(
    process.execPath,
    [
      "src/main.ts",
      "--upstream",
      upstream,
      "--server-name",
      "hs.test",
      "--signing-key",
      join(dir, "k"),
      "--listen",
      `127.0.0.1:${port}`,
      "--data-dir",
      join(dir, "data"),
      "--engine",
      engine,
      "--log-level",
      "error",
    ],
    { stdio: "ignore" },
  );
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>((r) =>
      net
        .connect(port, "127.0.0.1")
        .once("connect", function (this: net.Socket) {
          this.destroy();
          r(true);
        })
        .once("error", () => r(false)),
    );
    if (up) break;
    await sleep(100);
  }
  return { pid: child.pid!, port, stop: () => child.kill() };
}

type Attack = (s: net.Socket) => void;
const head = (token?: string) =>
  `POST /_matrix/client/v3/keys/query HTTP/1.1\r\nHost: x\r\nContent-Length: ${BODY}\r\n${token ? `Authorization: Bearer ${token}\r\n` : ""}\r\n`;
const almostAll =
  (token?: string): Attack =>
  (s) => {
    s.write(head(token));
    const chunk = Buffer.alloc(1 << 20, 0x20);
    for (let i = 0; i < 8; i++) s.write(i === 7 ? chunk.subarray(1) : chunk);
  };
const ATTACKS: [string, Attack][] = [
  ["no token, 8 MiB − 1 body", almostAll()],
  ["refused token, 8 MiB − 1 body", almostAll("made-up")],
  [
    "half a head (60 KiB of headers, never finished)",
    (s) => s.write(`POST /_matrix/client/v3/keys/query HTTP/1.1\r\nHost: x\r\nX-Pad: ${"a".repeat(60_000)}`),
  ],
];

console.log(`${CONNECTIONS} connections per row; the proxy's RSS 3 s after they opened, less its RSS before\n`);
console.log("| engine | attack | RSS growth (MiB) | per connection (KiB) | connections closed by the proxy |");
console.log("|---|---|---|---|---|");
for (const engine of ["bun", "node"]) {
  for (const [what, attack] of ATTACKS) {
    const proxy = await startProxy(engine);
    await sleep(500);
    const before = rssKiB(proxy.pid);
    let closed = 0;
    const socks = Array.from({ length: CONNECTIONS }, () => {
      const s = net.connect(proxy.port, "127.0.0.1", () => attack(s));
      s.on("error", () => {});
      s.on("close", () => closed++);
      return s;
    });
    await sleep(3000);
    const grown = rssKiB(proxy.pid) - before;
    console.log(
      `| ${engine} | ${what} | ${(grown / 1024).toFixed(1)} | ${Math.round(grown / CONNECTIONS)} | ${closed} of ${CONNECTIONS} |`,
    );
    socks.forEach((s) => s.destroy());
    proxy.stop();
    await sleep(200);
  }
}
hs.close();
process.exit(0);
