// One Synapse 1.47 (r0 client paths only) on loopback, for the e2e test that proves the proxy
// works in front of homeservers older than the v3 client API. Same configuration, TLS and
// readiness checks as hs1/hs2 (config.ts, tls.ts, ready.ts); its own ports, venv and CA
// (layout.ts `oldSlot`), so it runs beside them without their lock. Fresh data on every start.
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { synapseConfig, writeConfig, writeSigningKey } from "./config.ts";
import { installOldSynapse } from "./install.ts";
import { oldSlot, oldTlsDir, slotPaths } from "./layout.ts";
import { isAlive, isOurSynapse, portInUse, spawnSynapse, stopFromPidFile, stopPid } from "./process.ts";
import { waitReady } from "./ready.ts";
import { ensureTls } from "./tls.ts";

export interface OldSynapse {
  serverName: string;
  clientUrl: string;
  federationUrl: string;
  signingKeyPath: string;
  /** `ed25519:<version>`, the id under which the server publishes signingKeyPath's key. */
  keyId: string;
  caPath: string;
  pid: number;
  logPath: string;
  stop(): Promise<void>;
}

export async function startOldSynapse(
  opts: { log?: (s: string) => void; readyTimeoutMs?: number } = {},
): Promise<OldSynapse> {
  const log = opts.log ?? (() => {});
  const python = await installOldSynapse({ log });
  const p = slotPaths(oldSlot.name);
  await stopFromPidFile(p.pidPath, p.configPath); // a crashed earlier run's server
  for (const port of [oldSlot.tlsPort, oldSlot.clientPort]) {
    if (await portInUse(port))
      throw new Error(`port ${port} for ${oldSlot.serverName} is already in use by another process`);
  }
  await rm(p.dataDir, { recursive: true, force: true });
  await mkdir(p.mediaDir, { recursive: true });
  await writeSigningKey(p.signingKeyPath, oldSlot.keyVersion);
  const tls = await ensureTls(oldTlsDir);
  await writeConfig(p.configPath, synapseConfig(oldSlot, p, tls));
  await writeFile(p.overridesPath, "{}");
  const started = Date.now();
  const pid = await spawnSynapse({
    python,
    configPath: p.configPath,
    cwd: p.dataDir,
    logPath: p.logPath,
    pidPath: p.pidPath,
  });
  const hs: OldSynapse = {
    serverName: oldSlot.serverName,
    clientUrl: `http://127.0.0.1:${oldSlot.clientPort}`,
    federationUrl: `https://localhost:${oldSlot.tlsPort}`,
    signingKeyPath: p.signingKeyPath,
    keyId: `ed25519:${oldSlot.keyVersion}`,
    caPath: tls.caPath,
    pid,
    logPath: p.logPath,
    async stop() {
      if (isAlive(pid) && isOurSynapse(pid, p.configPath)) await stopPid(pid);
      await rm(p.pidPath, { force: true });
    },
  };
  try {
    await waitReady({ ...hs, caPem: await readFile(tls.caPath, "utf8") }, opts.readyTimeoutMs ?? 180_000);
  } catch (err) {
    await stopPid(pid).catch(() => {});
    throw err;
  }
  log(
    `${oldSlot.serverName} (Synapse 1.47) ready in ${Math.round((Date.now() - started) / 100) / 10} s (pid ${pid}, log ${p.logPath})`,
  );
  return hs;
}
