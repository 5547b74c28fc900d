// Several compiled proxy replicas on one database, as docs/scaling.md deploys them: each its own
// process on a fixed loopback port (so a restarted replica comes back where nginx expects it),
// its own --data-dir and ops listener, the same signing key and flags. Tests reach them only
// over sockets, and kill, stop and start them one by one.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BINARY, ensureBinary } from "../blackbox/runtimes.ts";
import { writeTestKey } from "./proxy.ts";

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface Replica {
  name: string;
  /** The client listener (fixed for the replica's life, restarts included). */
  port: number;
  /** The ops listener: /metrics, /healthz, /readyz. */
  opsPort: number;
  /** The running process's pid (undefined while stopped). */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** Everything the current and earlier processes of this replica wrote to stderr. */
  log(): string;
  /** Start the process (again) and wait for its "listening" line. */
  start(): Promise<void>;
  /** SIGTERM and wait for the exit; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** kill -9 and wait for the exit. */
  kill(): Promise<void>;
}

export interface ReplicasOptions {
  /** postgres://… (or sqlite:…) for every replica. */
  database: string;
  upstream: string;
  serverName?: string;
  caPath?: string;
  /** The homeserver's signing key file (default: the tests' key, writeTestKey()). */
  signingKey?: string;
  /** --federation-allow-cidrs with caPath (default 127.0.0.0/8). */
  allowCidrs?: string;
  extra?: string[];
}

export async function startReplicas(n: number, o: ReplicasOptions): Promise<Replica[]> {
  ensureBinary();
  const dir = mkdtempSync(join(tmpdir(), "replicas-"));
  const key = o.signingKey ?? writeTestKey(dir);
  const names = ["A", "B", "C", "D", "E"];
  const replicas = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const [port, opsPort] = [await freePort(), await freePort()];
      const dataDir = join(dir, `data-${i}`);
      mkdirSync(dataDir);
      const args = [
        ...(o.database ? ["--database", o.database] : []),
        "--upstream",
        o.upstream,
        "--server-name",
        o.serverName ?? "hs.test",
        "--signing-key",
        key,
        "--listen",
        `127.0.0.1:${port}`,
        "--metrics-listen",
        `127.0.0.1:${opsPort}`,
        "--data-dir",
        dataDir,
        "--trusted-proxies",
        "loopback",
        ...(o.caPath ? ["--federation-ca", o.caPath, "--federation-allow-cidrs", o.allowCidrs ?? "127.0.0.0/8"] : []),
        "--log-level",
        "info",
        ...(o.extra ?? []),
      ];
      return replica(names[i] ?? `R${i}`, port, opsPort, args);
    }),
  );
  await Promise.all(replicas.map((r) => r.start()));
  return replicas;
}

function replica(name: string, port: number, opsPort: number, args: string[]): Replica {
  let child: ChildProcess | undefined;
  let all = "";
  const r: Replica = {
    name,
    port,
    opsPort,
    get pid() {
      return child?.exitCode === null ? child.pid : undefined;
    },
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    log: () => all,
    async start() {
      const c = spawn(BINARY, args, { stdio: ["ignore", "ignore", "pipe"] });
      child = c;
      let mine = "";
      c.stderr!.on("data", (d: Buffer) => {
        mine += d.toString();
        all += d.toString();
      });
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`replica ${name}: no 'listening' line in 30 s:\n${mine}`)), 30_000);
        const check = () => {
          if (/"msg":"listening"/.test(mine)) {
            clearTimeout(t);
            c.stderr!.off("data", check);
            resolve();
          }
        };
        c.stderr!.on("data", check);
        c.once("exit", (code, sig) => {
          clearTimeout(t);
          reject(new Error(`replica ${name} exited (${code ?? sig}) while starting:\n${mine}`));
        });
      });
    },
    async stop() {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return c?.exitCode ?? null;
      const exited = once(c, "exit");
      c.kill("SIGTERM");
      const [code] = (await exited) as [number | null];
      return code;
    },
    async kill() {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const exited = once(c, "exit");
      c.kill("SIGKILL");
      await exited;
    },
  };
  return r;
}

export async function stopReplicas(rs: Replica[]): Promise<void> {
  await Promise.all(rs.map((r) => r.kill()));
}

/**
 * The pid owning the loopback TCP socket bound to local `port`: who sent a request the fakes saw.
 * `peerPort`, the server's port, narrows it to that connection: Linux hands the same ephemeral
 * port to connections to different destinations, so the local port alone may name another
 * process's socket.
 */
export function pidOfLocalPort(port: number, peerPort?: number): number | undefined {
  const peer = peerPort === undefined ? [] : ["dst", `127.0.0.1:${peerPort}`];
  const r = spawnSync("ss", ["-tnpH", "src", `127.0.0.1:${port}`, ...peer], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`ss failed: ${r.stderr}`);
  const m = /pid=(\d+)/.exec(r.stdout);
  return m ? Number(m[1]) : undefined;
}

/** A Prometheus counter's sum over every label set whose labels include `labels`. */
export async function counter(r: Replica, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${r.opsPort}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}
