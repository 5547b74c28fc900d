// Pass-through benchmark: direct vs nginx vs matrix-resync-proxy, same upstream, same run.
// Rounds alternate the three targets so machine noise hits each alike. Needs wrk and nginx
// (Debian: apt-get install wrk nginx-light). Usage: bun scripts/bench-passthrough.ts [seconds]
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const SECONDS = Number(process.argv[2] ?? 8);
const ROUNDS = 3;
const root = join(import.meta.dirname, "..");
const tmp = mkdtempSync(join(tmpdir(), "bench-"));
const children: ChildProcess[] = [];
const UP = 18601, NGINX = 18602, PROXY = 18603;

function start(cmd: string, args: string[]): ChildProcess {
  const c = spawn(cmd, args, { stdio: ["ignore", "ignore", "inherit"] });
  children.push(c);
  return c;
}
process.on("exit", () => children.forEach((c) => c.kill("SIGKILL")));

async function waitFor(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/_matrix/client/versions`);
      return;
    } catch {
      await Bun.sleep(50);
    }
  }
  throw new Error(`port ${port} never answered`);
}

function nginxConf(): string {
  const conf = join(tmp, "nginx.conf");
  writeFileSync(conf, `
worker_processes auto;
pid ${tmp}/nginx.pid;
error_log ${tmp}/nginx-error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  upstream hs { server 127.0.0.1:${UP}; keepalive 128; }
  server {
    listen 127.0.0.1:${NGINX};
    location / {
      proxy_pass http://hs;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering off;
      proxy_read_timeout 180s;
    }
  }
}`);
  return conf;
}

interface Result { rps: number; p50: number; p99: number; mbps: number }

function wrk(port: number, path: string, conns: number): Result {
  const r = spawnSync("wrk", ["-t2", `-c${conns}`, `-d${SECONDS}s`, "--latency", `http://127.0.0.1:${port}${path}`], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(r.stderr);
  const ms = (label: string) => {
    const m = new RegExp(`${label}\\s+([\\d.]+)(us|ms|s)`).exec(r.stdout);
    if (!m) return NaN;
    return Number(m[1]) * (m[2] === "us" ? 0.001 : m[2] === "s" ? 1000 : 1);
  };
  const transfer = /Transfer\/sec:\s+([\d.]+)(KB|MB|GB)/.exec(r.stdout);
  const mbps = transfer ? Number(transfer[1]) * (transfer[2] === "GB" ? 1024 : transfer[2] === "KB" ? 1 / 1024 : 1) : NaN;
  return { rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(r.stdout)?.[1]), p50: ms("50%"), p99: ms("99%"), mbps };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main() {
  const bun = join(root, "node_modules", ".bin", "bun");
  const binary = join(root, "dist", "matrix-resync-proxy");
  start(bun, [join(root, "scripts", "bench-upstream.ts"), String(UP)]);
  start("nginx", ["-c", nginxConf()]);
  const key = join(tmp, "bench.signing.key");
  writeFileSync(key, "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n");
  start(binary, ["--upstream", `http://127.0.0.1:${UP}`, "--server-name", "bench.test", "--signing-key", key, "--listen", `127.0.0.1:${PROXY}`, "--data-dir", join(tmp, "data"), "--log-level", "warn"]);
  await Promise.all([waitFor(UP), waitFor(NGINX), waitFor(PROXY)]);

  const targets = { direct: UP, nginx: NGINX, proxy: PROXY } as const;
  const cases = [
    { name: "small JSON GET, 64 conns", path: "/_matrix/client/v3/pushrules/", conns: 64 },
    { name: "5 MB streamed body, 8 conns", path: `/big/${5 * 1024 * 1024}`, conns: 8 },
  ];
  const rows: string[] = [];
  for (const c of cases) {
    const results: Record<string, Result[]> = { direct: [], nginx: [], proxy: [] };
    for (let round = 0; round < ROUNDS; round++)
      for (const [name, port] of Object.entries(targets)) results[name]!.push(wrk(port, c.path, c.conns));
    const agg = (name: string) => {
      const rs = results[name]!;
      return { rps: median(rs.map((r) => r.rps)), p50: median(rs.map((r) => r.p50)), p99: median(rs.map((r) => r.p99)), mbps: median(rs.map((r) => r.mbps)) };
    };
    const n = agg("nginx"), p = agg("proxy"), d = agg("direct");
    for (const [name, r] of [["direct", d], ["nginx", n], ["proxy", p]] as const)
      rows.push(`| ${c.name} | ${name} | ${r.rps.toFixed(0)} | ${r.mbps.toFixed(1)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} |`);
    rows.push(`| ${c.name} | **proxy/nginx** | **${(p.rps / n.rps).toFixed(2)}×** | ${(p.mbps / n.mbps).toFixed(2)}× | ${(p.p50 / n.p50).toFixed(2)}× | ${(p.p99 / n.p99).toFixed(2)}× |`);
  }
  console.log(`\nPass-through, ${ROUNDS} alternating rounds of ${SECONDS}s each (median), wrk -t2, ${spawnSync("nproc").stdout.toString().trim()} cores shared with the load generator\n`);
  console.log("| case | target | req/s | MB/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|");
  console.log(rows.join("\n"));
  process.exit(0);
}

await main();
