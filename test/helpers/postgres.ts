// A throw-away PostgreSQL cluster for tests and benchmarks: Debian's server binaries, a fresh
// `initdb` under a temp dir, the server in the foreground as a child process on a free loopback
// port (and a unix socket in the same dir), stopped and deleted at the end. PostgreSQL refuses
// to run as root, so under root the cluster belongs to the `postgres` user the package creates.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestPostgres {
  /** postgres://… for the cluster's `postgres` database (TCP on 127.0.0.1). */
  url: string;
  port: number;
  /** A fresh database in this cluster; its URL. */
  createDatabase(name: string): Promise<string>;
  /** Fast shutdown, then start again on the same port and data (a database restart). */
  restart(): Promise<void>;
  /** Stops the server (SIGINT: fast shutdown) without deleting the data. */
  stop(): Promise<void>;
  /** Starts a stopped server again. */
  start(): Promise<void>;
  /** Stops the server and deletes the cluster. */
  close(): Promise<void>;
}

/** Debian's PostgreSQL server binaries (/usr/lib/postgresql/<major>/bin), newest major first. */
export function postgresBinDir(): string {
  const root = "/usr/lib/postgresql";
  const majors = existsSync(root) ? readdirSync(root).filter((d) => /^\d+$/.test(d)) : [];
  majors.sort((a, b) => Number(b) - Number(a));
  for (const m of majors) if (existsSync(join(root, m, "bin", "postgres"))) return join(root, m, "bin");
  throw new Error("no PostgreSQL server binaries under /usr/lib/postgresql: apt-get install postgresql");
}

const asRoot = process.getuid?.() === 0;

/** spawn options that run a command as the cluster's owner (the `postgres` user under root). */
function owner(): { uid?: number; gid?: number } {
  if (!asRoot) return {};
  const id = (flag: string) => Number(spawnSync("id", [flag, "postgres"], { encoding: "utf8" }).stdout.trim());
  return { uid: id("-u"), gid: id("-g") };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export async function startPostgres(): Promise<TestPostgres> {
  const bin = postgresBinDir();
  const dir = mkdtempSync(join(tmpdir(), "mrp-pg-"));
  const data = join(dir, "data");
  const as = owner();
  if (as.uid !== undefined) chownSync(dir, as.uid, as.gid!);
  chmodSync(dir, 0o700);
  const init = spawnSync(
    join(bin, "initdb"),
    ["-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
    {
      encoding: "utf8",
      cwd: dir,
      ...as,
    },
  );
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr || init.stdout}`);
  const port = await freePort();
  let child: ChildProcess | undefined;
  let log = "";

  const start = async () => {
    const argv = [
      join(bin, "postgres"),
      "-D",
      data,
      "-p",
      String(port),
      "-c",
      "listen_addresses=127.0.0.1",
      "-c",
      `unix_socket_directories=${dir}`,
      "-c",
      "fsync=off",
      "-c",
      "max_connections=200",
    ];
    log = "";
    const c = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"], cwd: dir, ...as });
    child = c;
    c.stdout!.on("data", (d) => (log += d));
    c.stderr!.on("data", (d) => (log += d));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (c.exitCode !== null) throw new Error(`postgres exited: ${log}`);
      const ready = spawnSync(join(bin, "pg_isready"), ["-h", "127.0.0.1", "-p", String(port), "-q"]);
      if (ready.status === 0) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`postgres did not become ready: ${log}`);
  };
  const stop = async () => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise((r) => c.once("exit", r));
    c.kill("SIGINT"); // PostgreSQL's fast shutdown

    await exited;
  };
  await start();
  const url = (db: string) => `postgres://postgres@127.0.0.1:${port}/${db}`;
  return {
    url: url("postgres"),
    port,
    async createDatabase(name) {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad database name ${name}`);
      const r = spawnSync(
        join(bin, "psql"),
        ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-qc", `CREATE DATABASE ${name}`],
        {
          encoding: "utf8",
        },
      );
      if (r.status !== 0) throw new Error(`CREATE DATABASE failed: ${r.stderr}`);
      return url(name);
    },
    async restart() {
      await stop();
      await start();
    },
    stop,
    start,
    async close() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
