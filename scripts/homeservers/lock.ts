// One owner of the two homeservers at a time. Ports and state are fixed (the server names
// contain the ports), so two concurrent test runs would stop each other's Synapses; the
// second waits for the first instead. The lock names its owner's PID, so a crashed owner's
// lock is taken over rather than waited on forever.
import { link, readFile, rm, writeFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { isAlive } from "./process.ts";

export async function lockOwner(path: string): Promise<number | undefined> {
  try {
    const pid = Number.parseInt(await readFile(path, "utf8"), 10);
    return Number.isSafeInteger(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

export async function acquireLock(path: string, timeoutMs: number, log: (s: string) => void): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let told = false;
  for (;;) {
    // Write then hard-link: the lock appears atomically with its owner's PID in it, so a
    // reader never sees an empty lock and mistakes it for a dead owner's.
    const tmp = `${path}.${process.pid}`;
    await writeFile(tmp, `${process.pid}\n`);
    try {
      await link(tmp, path);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    } finally {
      await rm(tmp, { force: true });
    }
    const pid = await lockOwner(path);
    if (pid === process.pid) return;
    if (pid === undefined || !isAlive(pid)) {
      await rm(path, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`homeservers are in use by process ${pid} (lock ${path})`);
    if (!told) log(`waiting for process ${pid} to release the homeservers`);
    told = true;
    await sleep(1_000);
  }
}

export async function releaseLock(path: string): Promise<void> {
  if ((await lockOwner(path)) === process.pid) await rm(path, { force: true });
}
