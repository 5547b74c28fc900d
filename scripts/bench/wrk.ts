// wrk (the HTTP load generator) and nginx-light (the reference reverse proxy), as the
// pass-through benchmarks use them. Debian: apt-get install wrk nginx-light.
import { spawn, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { benchTmp } from "./binary.ts";
import { type Proc, startProc } from "./procs.ts";

export interface WrkResult {
  rps: number;
  p50: number; // ms
  p99: number; // ms
  mbps: number; // MiB/s
  errors: number; // socket errors + non-2xx/3xx responses
}

export function wrk(url: string, conns: number, seconds: number, threads = 2): WrkResult {
  const r = spawnSync("wrk", wrkArgs(url, conns, seconds, threads), {
    encoding: "utf8",
    timeout: (seconds + 30) * 1000,
  });
  if (r.status !== 0) throw new Error(`wrk failed: ${r.stderr || r.error?.message}`);
  return parseWrk(r.stdout);
}

/** wrk without blocking this process: its event loop keeps reading the children's output. */
export function wrkAsync(url: string, conns: number, seconds: number, threads = 2): Promise<WrkResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("wrk", wrkArgs(url, conns, seconds, threads), { stdio: ["ignore", "pipe", "pipe"] });
    let out = "",
      err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(parseWrk(out)) : reject(new Error(`wrk failed: ${err}`))));
  });
}

const wrkArgs = (url: string, conns: number, seconds: number, threads: number) => [
  `-t${threads}`,
  `-c${conns}`,
  `-d${seconds}s`,
  "--latency",
  url,
];

function parseWrk(out: string): WrkResult {
  const ms = (label: string) => {
    const m = new RegExp(`${label}\\s+([\\d.]+)(us|ms|s)`).exec(out);
    if (!m) return NaN;
    return Number(m[1]) * (m[2] === "us" ? 0.001 : m[2] === "s" ? 1000 : 1);
  };
  const transfer = /Transfer\/sec:\s+([\d.]+)(B|KB|MB|GB)/.exec(out);
  const unit = { B: 1 / 1024 / 1024, KB: 1 / 1024, MB: 1, GB: 1024 } as Record<string, number>;
  const mbps = transfer ? Number(transfer[1]) * unit[transfer[2]!]! : NaN;
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const errors = non2xx + (sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
  return { rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]), p50: ms("50%"), p99: ms("99%"), mbps, errors };
}

/** An ephemeral loopback port for a program that cannot report the one it bound (nginx). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * nginx tuned as a reverse proxy would be in front of a homeserver: upstream keep-alive pool,
 * HTTP/1.1 upstream, no buffering (a /sync must stream), no access log. keepalive_requests is
 * raised on both sides: nginx's default of 1,000 would reconnect wrk's and the upstream's
 * connections every 1,000 requests, which the proxy never does, a handicap no deployment
 * under this load would keep. `connections`: per worker (the idle family holds thousands).
 */
export async function startNginx(
  upstreamPort: number,
  o: { connections?: number; raiseFdLimit?: boolean; workers?: number } = {},
): Promise<{ proc: Proc; port: number }> {
  const port = await freePort();
  const connections = o.connections ?? 8192;
  const dir = benchTmp();
  const conf = join(dir, "nginx.conf");
  writeFileSync(
    conf,
    `
worker_processes ${o.workers ?? "auto"};
worker_rlimit_nofile ${Math.max(16384, connections + 100)};
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
daemon off;
events { worker_connections ${connections}; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path ${dir}/nginx-body;
  proxy_temp_path ${dir}/nginx-proxy;
  upstream hs { server 127.0.0.1:${upstreamPort}; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${port} reuseport;
    location / {
      proxy_pass http://hs;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 180s;
    }
  }
}`,
  );
  const proc = startProc("nginx", ["-c", conf, "-e", `${dir}/nginx-error.log`], { raiseFdLimit: o.raiseFdLimit });
  await waitForHttp(`http://127.0.0.1:${port}/_matrix/client/versions`);
  return { proc, port };
}

export async function waitForHttp(url: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await (await fetch(url)).arrayBuffer();
      return;
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`${url} never answered: ${String(e)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
