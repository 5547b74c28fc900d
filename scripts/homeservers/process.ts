// Running one Synapse process: spawn detached with its output in a log file, wait until
// it answers, stop it by PID. Only PIDs we recorded, and only if /proc still shows our
// Synapse command line there, are ever signalled: a recycled PID is left alone.
import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

export interface SpawnOptions {
  python: string;
  configPath: string;
  cwd: string;
  logPath: string;
  pidPath: string;
}

export async function spawnSynapse(opts: SpawnOptions): Promise<number> {
  const out = openSync(opts.logPath, "a");
  try {
    // detached: the CLI's `start` exits and leaves the servers running; tests stop them
    // explicitly. Its own process group also keeps a Ctrl-C in the terminal from it.
    const child = spawn(opts.python, ["-m", "synapse.app.homeserver", "-c", opts.configPath], {
      cwd: opts.cwd,
      detached: true,
      stdio: ["ignore", out, out],
      env: { ...process.env, PYTHONUNBUFFERED: "1" },
    });
    const pid = child.pid;
    if (pid === undefined) throw new Error(`could not start Synapse (${opts.python})`);
    child.unref();
    await writeFile(opts.pidPath, `${pid}\n`);
    return pid;
  } finally {
    closeSync(out);
  }
}

function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return undefined;
  }
}

/** Alive and not a zombie (a child we spawned but nobody has reaped yet). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  return procState(pid) !== "Z";
}

/** True when `pid` is a Synapse started with `configPath` (guards against PID reuse). */
export function isOurSynapse(pid: number, configPath: string): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return cmdline.includes("synapse.app.homeserver") && cmdline.includes(configPath);
  } catch {
    return false;
  }
}

export async function readPid(pidPath: string): Promise<number | undefined> {
  try {
    const pid = Number.parseInt(await readFile(pidPath, "utf8"), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** SIGTERM, wait up to `graceMs`, then SIGKILL. Resolves once the process is gone. */
export async function stopPid(pid: number, graceMs = 20_000): Promise<void> {
  const signal = (sig: NodeJS.Signals): void => {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  };
  if (!isAlive(pid)) return;
  signal("SIGTERM");
  const deadline = Date.now() + graceMs;
  while (isAlive(pid) && Date.now() < deadline) await sleep(100);
  if (isAlive(pid)) {
    signal("SIGKILL");
    const killDeadline = Date.now() + 10_000;
    while (isAlive(pid) && Date.now() < killDeadline) await sleep(100);
  }
  if (isAlive(pid)) throw new Error(`process ${pid} survived SIGKILL`);
}

/** Stops the Synapse recorded in `pidPath`, if it is still ours, and removes the file. */
export async function stopFromPidFile(pidPath: string, configPath: string): Promise<number | undefined> {
  const pid = await readPid(pidPath);
  if (pid !== undefined && isAlive(pid) && isOurSynapse(pid, configPath)) await stopPid(pid);
  await rm(pidPath, { force: true });
  return pid;
}

/** True if something accepts TCP connections on 127.0.0.1:port. */
export function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: "127.0.0.1", port });
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", () => resolve(false));
  });
}

export async function logTail(logPath: string, lines = 40): Promise<string> {
  try {
    return (await readFile(logPath, "utf8")).split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}
