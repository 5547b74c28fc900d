// Durable state must survive `kill -9` (docs/architecture.md "Durable state"): a child process running
// the current runtime writes through the store, says "written", and is SIGKILLed without any
// chance to close or checkpoint. The test then reopens the same file and reads every row back.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, expect, it } from "vitest";
import { openSqliteStore, STORE_FILE } from "../../src/store/sqlite.ts";
import { openSqliteDatabase } from "../../src/store/sqlite-driver.ts";

const storeModule = new URL("../../src/store/sqlite.ts", import.meta.url).href;

const childSource = `
import process from "node:process";
import { openSqliteStore } from ${JSON.stringify(storeModule)};
const store = await openSqliteStore(process.env.STORE_DIR);
await store.putSnapshot({ userId: "@alice:remote.example", streamId: 42,
  devices: { DEV: { device_id: "DEV", unsigned: { device_display_name: "laptop" } } },
  masterKey: { usage: ["master"] }, fetchedAt: 1234 });
await store.putRetry({ userId: "@bob:remote.example", attempts: 3, dueAt: 5678, requestedBy: ["@me:local"], lastError: "timeout" });
await store.addPending([{ userId: "@me:local", deviceId: "D1", target: "@alice:remote.example" },
  { userId: "@me:local", deviceId: "D2", target: "@alice:remote.example" }]);
await store.markCarried("@me:local", "D1", ["@alice:remote.example"], "s_99");
await store.track("@me:local", "D1", ["@alice:remote.example"], 999);
await store.putBackoff({ destination: "remote.example", failures: 2, retryAt: 777, lastProbeAt: 666 });
let n = 0;
await store.putSnapshot({ userId: "@loop:remote.example", streamId: n, devices: {}, fetchedAt: 0 });
const runtime = typeof Bun !== "undefined" ? "bun" : "Deno" in globalThis ? "deno" : "node";
process.stdout.write("written by " + runtime + "\\n");
// Keep writing until killed, so the kill lands between or inside transactions.
setInterval(() => { n++; void store.putSnapshot({ userId: "@loop:remote.example", streamId: n, devices: {}, fetchedAt: 0 }); }, 1);
`;

let base = "";
afterEach(async () => {
  if (base) rmSync(base, { recursive: true, force: true });
});

function runChildUntilWritten(script: string, dataDir: string): Promise<{ signal: string | null; stdout: string }> {
  const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
  // Deno needs its subcommand and permissions; Bun runs a .ts file directly.
  const args = isBun ? [script] : ["run", "-A", script];
  const child = spawn(process.execPath, args, {
    env: { ...process.env, STORE_DIR: dataDir },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  return new Promise((resolve, reject) => {
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
      if (/written.*\n/.test(stdout)) child.kill("SIGKILL");
    });
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      if (signal === null) reject(new Error(`child exited with code ${code} before being killed: ${stderr}`));
      else resolve({ signal, stdout });
    });
  });
}

it("keeps committed rows after the writer is killed with SIGKILL", async () => {
  base = mkdtempSync(join(tmpdir(), "store-kill-"));
  const dataDir = join(base, "data");
  const script = join(base, "child.ts");
  writeFileSync(script, childSource);

  const { signal, stdout } = await runChildUntilWritten(script, dataDir);
  expect(signal).toBe("SIGKILL");
  // process.execPath really ran the runtime under test (so its own SQLite driver wrote).
  const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
  expect(stdout).toContain(`written by ${isBun ? "bun" : "deno"}`);
  // The process never closed the database, so its commits are still in the WAL: reopening
  // must replay it (a checkpoint on clean close would hide a broken recovery path).
  const wal = join(dataDir, `${STORE_FILE}-wal`);
  expect(existsSync(wal) && statSync(wal).size > 0).toBe(true);

  const store = await openSqliteStore(dataDir);
  try {
    expect(await store.getSnapshot("@alice:remote.example")).toEqual({
      userId: "@alice:remote.example",
      streamId: 42,
      devices: { DEV: { device_id: "DEV", unsigned: { device_display_name: "laptop" } } },
      masterKey: { usage: ["master"] },
      fetchedAt: 1234,
    });
    expect(await store.getRetry("@bob:remote.example")).toEqual({
      userId: "@bob:remote.example",
      attempts: 3,
      dueAt: 5678,
      requestedBy: ["@me:local"],
      lastError: "timeout",
    });
    expect(await store.pendingFor("@me:local", "D1")).toEqual([
      { target: "@alice:remote.example", carriedIn: ["s_99"] },
    ]);
    expect(await store.pendingFor("@me:local", "D2")).toEqual([{ target: "@alice:remote.example", carriedIn: [] }]);
    expect(await store.trackersOf("@alice:remote.example")).toEqual([{ userId: "@me:local", deviceId: "D1" }]);
    expect(await store.getBackoff("remote.example")).toEqual({
      destination: "remote.example",
      failures: 2,
      retryAt: 777,
      lastProbeAt: 666,
    });
    expect((await store.getSnapshot("@loop:remote.example"))?.streamId).toBeGreaterThanOrEqual(0);
    // And the store keeps working after recovery.
    await store.ping();
    expect(await store.ackToken("@me:local", "D1", "s_99")).toBe(1);
  } finally {
    await store.close();
  }
  const raw = await openSqliteDatabase(join(dataDir, STORE_FILE));
  expect(raw.prepare("PRAGMA integrity_check").get()?.["integrity_check"]).toBe("ok");
  raw.close();
});
