// Child processes for the benchmarks, and what /proc says about them. Every child is killed
// when the bench exits, however it exits, so a failed run leaves nothing behind.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";

const live = new Set<ChildProcess>();

// A program's own children (nginx's workers): killing only the parent would orphan them.
function childrenOf(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((t) =>
      readFileSync(`/proc/${pid}/task/${t}/children`, "utf8").trim().split(" ").filter(Boolean).map(Number),
    );
  } catch {
    return [];
  }
}

function killTree(c: ChildProcess, signal: NodeJS.Signals): number[] {
  const kids = c.pid === undefined ? [] : childrenOf(c.pid);
  c.kill(signal);
  return kids;
}

function killPids(pids: number[]): void {
  for (const p of pids) {
    try {
      process.kill(p, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

function killAll(): void {
  for (const c of live) killPids(killTree(c, "SIGKILL"));
}
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

export interface Proc {
  child: ChildProcess;
  pid: number;
  /** The last 200 lines of stdout and stderr, for error messages. */
  tail: string[];
  /** Resolves with the first line (seen so far or later) matching `re`. */
  waitLine(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Write a line to the child's stdin. */
  send(line: string): void;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the child is gone. */
  stop(graceMs?: number): Promise<void>;
}

export interface StartOptions {
  /** Raise the soft open-files limit to the hard limit first (10,000 sockets need it). */
  raiseFdLimit?: boolean;
  env?: Record<string, string>;
  /** Output lines kept in `tail` (default 200). */
  tailLines?: number;
}

export function startProc(cmd: string, args: string[], opts: StartOptions = {}): Proc {
  // `exec` keeps the pid, so /proc/<pid> is the benchmarked program and not the shell.
  const [file, argv] = opts.raiseFdLimit
    ? ["bash", ["-c", 'ulimit -n "$(ulimit -Hn)" && exec "$@"', "bash", cmd, ...args]]
    : [cmd, args];
  const child = spawn(file, argv, { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, ...opts.env } });
  if (child.pid === undefined) throw new Error(`could not start ${cmd}`);
  live.add(child);
  const tail: string[] = [];
  const watchers: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.once("exit", () => {
      exited = true;
      live.delete(child);
      resolve();
    }),
  );
  const onLine = (line: string) => {
    tail.push(line);
    if (tail.length > (opts.tailLines ?? 200)) tail.shift();
    for (const w of [...watchers]) {
      const m = w.re.exec(line);
      if (m) {
        watchers.splice(watchers.indexOf(w), 1);
        w.resolve(m);
      }
    }
  };
  // Always drain both pipes: a child blocked on a full pipe would distort every figure.
  for (const stream of [child.stdout, child.stderr]) {
    let buf = "";
    stream?.setEncoding("utf8");
    stream?.on("data", (chunk: string) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        onLine(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
  }
  child.stdin?.on("error", () => {}); // a child that exits early must not crash the bench
  return {
    child,
    pid: child.pid,
    tail,
    waitLine(re, timeoutMs = 20_000) {
      const seen = tail.map((l) => re.exec(l)).find((m) => m !== null);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const w = { re, resolve: (m: RegExpMatchArray) => (clearTimeout(t), resolve(m)) };
        const t = setTimeout(() => {
          watchers.splice(watchers.indexOf(w), 1);
          reject(
            new Error(
              `${cmd}: no line matching ${re} within ${timeoutMs} ms; last output:\n${tail.slice(-15).join("\n")}`,
            ),
          );
        }, timeoutMs);
        watchers.push(w);
        void exit.then(() => {
          if (!watchers.includes(w)) return;
          watchers.splice(watchers.indexOf(w), 1);
          clearTimeout(t);
          reject(new Error(`${cmd} exited (code ${child.exitCode}); last output:\n${tail.slice(-15).join("\n")}`));
        });
      });
    },
    send(line) {
      child.stdin?.write(`${line}\n`);
    },
    async stop(graceMs = 3000) {
      if (exited) return;
      const kids = killTree(child, "SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exit;
      clearTimeout(t);
      killPids(kids.filter((k) => existsSync(`/proc/${k}`)));
    },
  };
}

// ---- /proc ----

const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout?.trim()) || 100;

function statusField(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`/proc/${pid}/status has no ${field}`);
  return Number(m[1]) * 1024;
}

/** Resident set size, bytes. */
export const rssBytes = (pid: number): number => statusField(pid, "VmRSS");

/** Resident set size split: anonymous (heap, allocator arenas) and file-backed (the binary's pages, mapped files). */
export const rssSplit = (pid: number): { anon: number; file: number } => ({
  anon: statusField(pid, "RssAnon"),
  file: statusField(pid, "RssFile"),
});

/** Peak resident set size since start or since the last resetPeakRss(), bytes. */
export const peakRssBytes = (pid: number): number => statusField(pid, "VmHWM");

/** Reset VmHWM (Linux >= 4.0: writing 5 to clear_refs); false when the kernel refuses. */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** User + system CPU time the process has used, seconds (/proc/<pid>/stat fields 14 and 15). */
export function cpuSeconds(pid: number): number {
  const t = cpuTimes(pid);
  return t.user + t.system;
}

/** CPU seconds a process has used, in user space and in the kernel (all its threads). */
export function cpuTimes(pid: number): { user: number; system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name (field 2) may contain spaces: count fields after its closing parenthesis.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { user: Number(rest[11]) / CLK_TCK, system: Number(rest[12]) / CLK_TCK };
}

/** A process's child pids (nginx's workers under its master). */
export function childPids(pid: number): number[] {
  const r = spawnSync("pgrep", ["-P", String(pid)], { encoding: "utf8" });
  return r.stdout.split("\n").filter(Boolean).map(Number);
}

/** Sample RSS every `everyMs` until stop(); the maximum seen, bytes. */
export function sampleRss(pid: number, everyMs = 10): { stop(): number } {
  let max = rssBytes(pid);
  const t = setInterval(() => {
    try {
      max = Math.max(max, rssBytes(pid));
    } catch {
      // the process is gone; keep the last maximum
    }
  }, everyMs);
  return {
    stop() {
      clearInterval(t);
      return max;
    },
  };
}

export function hardFdLimit(): number {
  const out = spawnSync("bash", ["-c", "ulimit -Hn"], { encoding: "utf8" }).stdout.trim();
  return out === "unlimited" ? 1 << 20 : Number(out) || 1024;
}

export const nproc = (): number => Number(spawnSync("nproc", { encoding: "utf8" }).stdout.trim()) || 1;

/** Open file descriptors of a process (Linux /proc). */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}
