// How the black-box suite starts the proxy: the shipped binary, and the same source under Bun
// and under Deno. Each is a separate process that the tests reach only over sockets.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dirname, "..", "..");
const bin = (name: string) => join(root, "node_modules", ".bin", name);

export interface Runtime {
  name: string;
  command: string[];
}

export const BINARY = join(root, "dist", "matrix-resync-proxy");

export const RUNTIMES: Runtime[] = [
  { name: "compiled binary", command: [BINARY] },
  { name: "bun", command: [bin("bun"), join(root, "src", "main.ts")] },
  { name: "deno", command: [bin("deno"), "run", "-A", join(root, "src", "main.ts")] },
];

const newestSource = (dir: string): number =>
  Math.max(
    0,
    ...readdirSync(dir, { withFileTypes: true }).map((e) =>
      e.isDirectory() ? newestSource(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs,
    ),
  );

/** The suite tests what ships: build the binary when it is missing or older than src/ (CI builds it first). */
export function ensureBinary(): void {
  if (existsSync(BINARY) && statSync(BINARY).mtimeMs >= newestSource(join(root, "src"))) return;
  const r = spawnSync(bin("bun"), ["scripts/build.ts"], { cwd: root, stdio: "inherit" });
  if (r.status !== 0) throw new Error("building the binary failed");
}

export function run(
  rt: Runtime,
  args: string[],
  env: Record<string, string> = {},
): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(rt.command[0]!, [...rt.command.slice(1), ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    encoding: "utf8",
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export async function startServe(
  rt: Runtime,
  args: string[],
): Promise<{ child: ChildProcess; port: number; stderr: () => string }> {
  const child = spawn(rt.command[0]!, [...rt.command.slice(1), ...args], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let err = "";
  child.stderr!.on("data", (c) => (err += c));
  const port = await new Promise<number>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no 'listening' line within 30 s: ${err}`)), 30_000);
    child.stderr!.on("data", () => {
      const m = /"msg":"listening".*?"listen":"[^"]*:(\d+)"/.exec(err);
      if (m) {
        clearTimeout(t);
        resolve(Number(m[1]));
      }
    });
    child.once("exit", (code) => reject(new Error(`exited ${code}: ${err}`)));
  });
  return { child, port, stderr: () => err };
}
