// Two real Synapse homeservers on loopback, federating with each other over TLS:
// the harness for end-to-end tests and the demo.
//   npx bun scripts/homeservers.ts start [--keep-data] | stop | status
// State lives in .homeservers/ (venv, tls, hs1, hs2). See scripts/homeservers/*.ts.
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { mergeConfig, synapseConfig, writeConfig, writeSigningKey, type ConfigObject } from "./homeservers/config.ts";
import { installSynapse } from "./homeservers/install.ts";
import { slotPaths, slots, stateDir, tlsDir, venvPython, type HomeserverName } from "./homeservers/layout.ts";
import { acquireLock, releaseLock } from "./homeservers/lock.ts";
import {
  isAlive,
  isOurSynapse,
  portInUse,
  readPid,
  spawnSynapse,
  stopFromPidFile,
  stopPid,
} from "./homeservers/process.ts";
import { waitReady } from "./homeservers/ready.ts";
import { ensureTls } from "./homeservers/tls.ts";

// Part of this module's API (brief E); the implementation lives beside the venv details.
export { installSynapse, pinnedSynapseVersion } from "./homeservers/install.ts";

export interface Homeserver {
  name: HomeserverName;
  serverName: string;
  clientUrl: string;
  federationUrl: string;
  signingKeyPath: string;
  /** `ed25519:<version>`, the id under which the server publishes signingKeyPath's key. */
  keyId: string;
  caPath: string;
  dataDir: string;
  configPath: string;
  pid: number;
  logPath: string;
  dbPath: string;
}

export interface StartOptions {
  log?: (s: string) => void;
  hs1Config?: ConfigObject;
  /** Merged over hs2's config, e.g. `{ send_federation: false }`. */
  hs2Config?: ConfigObject;
  /** Keep databases and keys from the previous run instead of starting empty. */
  keepData?: boolean;
  /** How long to wait for another process (e.g. a concurrent test run) to release them. */
  lockTimeoutMs?: number;
  readyTimeoutMs?: number;
}

export interface Homeservers {
  hs1: Homeserver;
  hs2: Homeserver;
  caPath: string;
  stop(): Promise<void>;
}

const defaultReadyTimeoutMs = 180_000;
export const lockPath = `${stateDir}/lock`;

function describe(name: HomeserverName, pid: number, caPath: string): Homeserver {
  const slot = slots[name];
  const p = slotPaths(name);
  return {
    name,
    serverName: slot.serverName,
    clientUrl: `http://127.0.0.1:${slot.clientPort}`,
    federationUrl: `https://localhost:${slot.tlsPort}`,
    signingKeyPath: p.signingKeyPath,
    keyId: `ed25519:${slot.keyVersion}`,
    caPath,
    dataDir: p.dataDir,
    configPath: p.configPath,
    pid,
    logPath: p.logPath,
    dbPath: p.dbPath,
  };
}

async function launch(
  name: HomeserverName,
  overrides: ConfigObject,
  log: (s: string) => void,
  readyTimeoutMs: number,
): Promise<Homeserver> {
  const slot = slots[name];
  const p = slotPaths(name);
  for (const port of [slot.tlsPort, slot.clientPort]) {
    if (await portInUse(port))
      throw new Error(`port ${port} for ${slot.serverName} is already in use by another process`);
  }
  const base = JSON.parse(await readFile(`${p.dataDir}/base.json`, "utf8")) as ConfigObject;
  await writeFile(p.overridesPath, JSON.stringify(overrides));
  await writeConfig(p.configPath, mergeConfig(base, overrides));
  const tls = await ensureTls(tlsDir);
  const started = Date.now();
  const pid = await spawnSynapse({
    python: venvPython,
    configPath: p.configPath,
    cwd: p.dataDir,
    logPath: p.logPath,
    pidPath: p.pidPath,
  });
  const hs = describe(name, pid, tls.caPath);
  try {
    await waitReady({ ...hs, caPem: await readFile(tls.caPath, "utf8") }, readyTimeoutMs);
  } catch (err) {
    await stopPid(pid).catch(() => {});
    throw err;
  }
  log(`${slot.serverName} ready in ${Math.round((Date.now() - started) / 100) / 10} s (pid ${pid}, log ${p.logPath})`);
  return hs;
}

/** Writes a fresh data dir: signing key, secrets and base config (kept across restarts). */
async function prepare(name: HomeserverName, keepData: boolean): Promise<void> {
  const slot = slots[name];
  const p = slotPaths(name);
  await stopFromPidFile(p.pidPath, p.configPath);
  if (keepData && existsSync(`${p.dataDir}/base.json`)) return;
  await rm(p.dataDir, { recursive: true, force: true });
  await mkdir(p.mediaDir, { recursive: true });
  await writeSigningKey(p.signingKeyPath, slot.keyVersion);
  const base = synapseConfig(slot, p, await ensureTls(tlsDir));
  await writeFile(`${p.dataDir}/base.json`, JSON.stringify(base, null, 2));
}

export async function startHomeservers(opts: StartOptions = {}): Promise<Homeservers> {
  const log = opts.log ?? (() => {});
  const timeout = opts.readyTimeoutMs ?? defaultReadyTimeoutMs;
  await installSynapse({ log });
  await mkdir(stateDir, { recursive: true });
  await acquireLock(lockPath, opts.lockTimeoutMs ?? 300_000, log);
  const tls = await ensureTls(tlsDir);
  let results: PromiseSettledResult<Homeserver>[] = [];
  try {
    await Promise.all([prepare("hs1", opts.keepData ?? false), prepare("hs2", opts.keepData ?? false)]);
    results = await Promise.allSettled([
      launch("hs1", opts.hs1Config ?? {}, log, timeout),
      launch("hs2", opts.hs2Config ?? {}, log, timeout),
    ]);
  } catch (err) {
    results.push({ status: "rejected", reason: err });
  }
  const failed = results.find((r) => r.status === "rejected");
  if (failed) {
    for (const r of results) if (r.status === "fulfilled") await stopHomeserver(r.value);
    await releaseLock(lockPath);
    throw failed.reason;
  }
  const [hs1, hs2] = results.map((r) => (r as PromiseFulfilledResult<Homeserver>).value) as [Homeserver, Homeserver];
  return {
    hs1,
    hs2,
    caPath: tls.caPath,
    // Stops what the pid files name now, so an hs2 restarted since (new pid) is stopped too.
    stop: async () => {
      await stopAllHomeservers();
      await releaseLock(lockPath);
    },
  };
}

/**
 * Stops `hs` and starts it again on the same data. `overrides` (merged over the base config)
 * replace those of the previous start; without it the previous overrides stay in force, so
 * pass `{}` to go back to the base config.
 */
export async function restartHomeserver(
  hs: Homeserver,
  overrides?: ConfigObject,
  opts: { log?: (s: string) => void; readyTimeoutMs?: number } = {},
): Promise<Homeserver> {
  // Read before stopping: the overrides file outlives the process, but fail early if absent.
  const keep = overrides ?? (await homeserverOverrides(hs));
  await stopHomeserver(hs);
  return launch(hs.name, keep, opts.log ?? (() => {}), opts.readyTimeoutMs ?? defaultReadyTimeoutMs);
}

/** The overrides `hs` was last started with (merged over its base config). */
export async function homeserverOverrides(hs: Homeserver): Promise<ConfigObject> {
  return JSON.parse(await readFile(slotPaths(hs.name).overridesPath, "utf8")) as ConfigObject;
}

export async function stopHomeserver(hs: Homeserver): Promise<void> {
  const p = slotPaths(hs.name);
  if (isAlive(hs.pid) && isOurSynapse(hs.pid, hs.configPath)) await stopPid(hs.pid);
  // An outdated `hs` (from before a restart) must not orphan the current process's pid file.
  if ((await readPid(p.pidPath)) === hs.pid) await rm(p.pidPath, { force: true });
}

/** Stops whatever the pid files name (the CLI's `stop`, and clean-up after a crashed run). */
export async function stopAllHomeservers(): Promise<void> {
  for (const name of ["hs1", "hs2"] as const) {
    const p = slotPaths(name);
    await stopFromPidFile(p.pidPath, p.configPath);
  }
}

if (import.meta.main) {
  const { cli } = await import("./homeservers/cli.ts");
  process.exitCode = await cli(process.argv.slice(2));
}
