// The proxy under test: the compiled single binary (what ships), built fresh once per bench
// run so the figures always describe the source. By default that is the working tree;
// BENCH_REF=<commit> builds a committed revision instead (uncommitted edits elsewhere in the
// tree then cannot leak in), and BENCH_BINARY=/path measures an existing build.
// BENCH_PROFILE=dir runs every proxy child from source under Bun's sampling profiler instead
// (names unminified), writing a .cpuprofile per child into dir at exit: summarise one with
// scripts/bench/profile-summary.ts. The figures of such a run are the profiler's, not the binary's.
import { execSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Buffer } from "node:buffer";
import { type SigningKey, signingKeyFromSeed, signJson } from "../../src/federation/signing.ts";
import { type Proc, startProc } from "./procs.ts";

export const ROOT = join(import.meta.dirname, "..", "..");
export const BUN = join(ROOT, "node_modules", ".bin", "bun");

// The spec's test seed (appendices §Signing JSON), key id ed25519:1. Upstreams in the bench
// publish it, so the proxy's start-up key check succeeds on the client port and never falls
// back to federation discovery of the server name (which would leave loopback).
export const SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";

export const benchKey = (): SigningKey => signingKeyFromSeed(Buffer.from(SEED, "base64"), "1");

/** GET /_matrix/key/v2/server as a homeserver named `serverName` would answer with our key. */
export function keyDocument(serverName: string): string {
  const key = benchKey();
  return JSON.stringify(
    signJson(
      {
        server_name: serverName,
        valid_until_ts: Date.now() + 24 * 3600_000,
        verify_keys: { [key.keyId]: { key: key.publicKey } },
        old_verify_keys: {},
      },
      serverName,
      key,
    ),
  );
}

const made: string[] = [];
process.on("exit", () => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

/** A fresh directory, removed when the bench exits. */
export function tempDir(root = tmpdir(), prefix = "mrp-bench-"): string {
  const d = mkdtempSync(join(root, prefix));
  made.push(d);
  return d;
}

let tmp: string | undefined;
export function benchTmp(): string {
  return (tmp ??= tempDir());
}

export interface Binary {
  path: string;
  /** What was built: a commit (with "-dirty" for a modified working tree) or the given path. */
  source: string;
  /** The tree it was built from (undefined for BENCH_BINARY). */
  srcRoot?: string;
  sizeBytes: number;
  /** Wall time of `bun build --compile`; undefined when BENCH_BINARY was given. */
  buildMs?: number;
}

let built: Binary | undefined;
export function binary(): Binary {
  if (built) return built;
  const given = process.env.BENCH_BINARY;
  if (given) return (built = { path: given, source: given, sizeBytes: statSync(given).size });
  const ref = process.env.BENCH_REF;
  let srcRoot = ROOT;
  let source = git(["describe", "--always", "--dirty"]);
  if (ref) {
    source = git(["rev-parse", "--short", ref]);
    srcRoot = join(benchTmp(), `src-${source}`);
    mkdirSync(srcRoot);
    execSync(`git -C '${ROOT}' archive '${ref}' src package.json tsconfig.json | tar -x -C '${srcRoot}'`);
    symlinkSync(join(ROOT, "node_modules"), join(srcRoot, "node_modules"));
  }
  const path = join(benchTmp(), "matrix-resync-proxy");
  const started = performance.now();
  // The same command as scripts/build.ts (npm run build), into our temporary directory.
  const r = spawnSync(
    BUN,
    [
      "build",
      "--compile",
      "--minify",
      "--sourcemap=inline",
      join(srcRoot, "src", "main.ts"),
      join(srcRoot, "src", "front-worker.ts"),
      "--outfile",
      path,
    ],
    { encoding: "utf8", cwd: srcRoot },
  );
  if (r.status !== 0) throw new Error(`bun build --compile failed: ${r.stderr || r.stdout}`);
  return (built = { path, source, srcRoot, sizeBytes: statSync(path).size, buildMs: performance.now() - started });
}

function git(args: string[]): string {
  const r = spawnSync("git", ["-C", ROOT, ...args], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : "unknown";
}

export function writeKeyFile(): string {
  const path = join(benchTmp(), "bench.signing.key");
  writeFileSync(path, `ed25519 1 ${SEED}\n`);
  return path;
}

export interface ProxyChild {
  proc: Proc;
  pid: number;
  port: number;
  url: string;
  stop(): Promise<void>;
}

export interface ProxyOptions {
  serverName: string;
  extra?: string[];
  raiseFdLimit?: boolean;
  /** Wait for the start-up key check to report "published" (default true). */
  expectKeyPublished?: boolean;
  /** Extra environment (BUN_JSC_logGC for the young-collection row). */
  env?: Record<string, string>;
  tailLines?: number;
  /** Run this build rather than the bench's own (scripts/bench-ab.ts compares two). */
  binaryPath?: string;
}

/** Start the compiled proxy on an ephemeral loopback port in front of `upstream`. */
export async function startProxyChild(upstream: string, o: ProxyOptions): Promise<ProxyChild> {
  // BENCH_DATA_ROOT=/dev/shm shows what the store's fsyncs cost (the default disk keeps them).
  const dataDir = tempDir(process.env.BENCH_DATA_ROOT ?? benchTmp(), "data-");
  const profile = process.env.BENCH_PROFILE;
  const [cmd, ...pre] = profile
    ? [BUN, "--cpu-prof", `--cpu-prof-dir=${profile}`, "--cpu-prof-interval=200", join(ROOT, "src", "main.ts")]
    : [o.binaryPath ?? binary().path];
  const proc = startProc(
    cmd!,
    [
      ...pre,
      "--upstream",
      upstream,
      "--server-name",
      o.serverName,
      "--signing-key",
      writeKeyFile(),
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      dataDir,
      "--log-level",
      "info",
      ...(o.extra ?? []),
    ],
    { raiseFdLimit: o.raiseFdLimit ?? false, env: o.env, tailLines: o.tailLines },
  );
  const m = await proc.waitLine(/"msg":"listening".*"listen":"127\.0\.0\.1:(\d+)"/);
  if (o.expectKeyPublished ?? true) await proc.waitLine(/signing key is published/, 15_000);
  const port = Number(m[1]);
  return { proc, pid: proc.pid, port, url: `http://127.0.0.1:${port}`, stop: () => proc.stop() };
}
