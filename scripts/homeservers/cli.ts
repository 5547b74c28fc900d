// `npx bun scripts/homeservers.ts start|stop|status`: the harness from a terminal (demo).
import { lockPath, startHomeservers, stopAllHomeservers } from "../homeservers.ts";
import { installSynapse, pinnedSynapseVersion } from "./install.ts";
import { slotPaths, slots } from "./layout.ts";
import { lockOwner } from "./lock.ts";
import { isAlive, isOurSynapse, readPid } from "./process.ts";

const usage = `usage: bun scripts/homeservers.ts <command>
  install              install the pinned Synapse into .homeservers/venv
  start [--keep-data]  (re)start hs1 (localhost:8481) and hs2 (localhost:8482); fresh data unless --keep-data
  stop [--force]       stop both, found by their pid files (--force: even if a live test run owns them)
  status               print pid, liveness and /health of each`;

const log = (s: string): void => console.error(`[homeservers] ${s}`);

async function status(): Promise<number> {
  let up = 0;
  for (const slot of Object.values(slots)) {
    const p = slotPaths(slot.name);
    const pid = await readPid(p.pidPath);
    const alive = pid !== undefined && isAlive(pid) && isOurSynapse(pid, p.configPath);
    let health = "-";
    if (alive) {
      health = await fetch(`http://127.0.0.1:${slot.clientPort}/health`, { signal: AbortSignal.timeout(3_000) })
        .then((r) => `${r.status}`)
        .catch((e: unknown) => String(e));
      if (health === "200") up++;
    }
    console.log(
      `${slot.name} ${slot.serverName} pid=${pid ?? "-"} running=${alive} health=${health} client=http://127.0.0.1:${slot.clientPort} log=${p.logPath}`,
    );
  }
  return up === 2 ? 0 : 1;
}

export async function cli(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  switch (command) {
    case "install":
      log(`venv python: ${await installSynapse({ log })} (matrix-synapse ${await pinnedSynapseVersion()})`);
      return 0;
    case "start": {
      const started = Date.now();
      const { hs1, hs2, caPath } = await startHomeservers({ log, keepData: rest.includes("--keep-data") });
      log(`both ready in ${Math.round((Date.now() - started) / 1000)} s`);
      console.log(JSON.stringify({ hs1, hs2, caPath }, null, 2));
      return 0;
    }
    case "stop": {
      const owner = await lockOwner(lockPath);
      if (owner !== undefined && isAlive(owner) && !rest.includes("--force")) {
        log(`process ${owner} (a test run?) owns the homeservers; use --force to stop them anyway`);
        return 1;
      }
      await stopAllHomeservers();
      log("stopped");
      return 0;
    }
    case "status":
      return status();
    default:
      console.error(usage);
      return command === "--help" || command === "-h" ? 0 : 2;
  }
}
