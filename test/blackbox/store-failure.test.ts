// A failing store never takes the process down (issue 16 item 3), tried on the real process
// under every runtime we ship: another connection holds the SQLite write lock, a /sync with a
// token the proxy has not seen goes through (before: the Bun engine died of an unhandled
// rejection), a refresh answers 503, and the process is still there. And the last-resort
// handlers themselves: a stray rejection and a stray exception are logged, not fatal.
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { openSqliteDatabase } from "../../src/store/sqlite-driver.ts";
import { STORE_FILE } from "../../src/store/sqlite.ts";
import { type FakeHomeserver, startFakeHomeserver } from "../helpers/fake-homeserver.ts";
import { writeTestKey } from "../helpers/proxy.ts";
import { ensureBinary, RUNTIMES, startServe } from "./runtimes.ts";

let hs: FakeHomeserver;
beforeAll(async () => {
  ensureBinary();
  hs = await startFakeHomeserver();
  hs.tokens.set("alice", ["@alice:hs.test", "ALICE"]);
}, 120_000);
afterAll(() => hs.close());

const ENGINES = ["bun", "node"] as const;
const CASES = RUNTIMES.flatMap((rt) =>
  rt.name === "deno" ? [{ rt, engine: "node" }] : ENGINES.map((engine) => ({ rt, engine })),
);

describe.each(CASES)("$rt.name, engine $engine", ({ rt, engine }) => {
  test("a store locked by another connection: /sync goes through, a refresh answers 503, the process lives", async () => {
    const key = writeTestKey();
    const dataDir = `${key}.data`;
    const proxy = await startServe(rt, [
      "--upstream",
      hs.url,
      "--server-name",
      "hs.test",
      "--signing-key",
      key,
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      dataDir,
      "--engine",
      engine,
    ]);
    const other = await openSqliteDatabase(join(dataDir, STORE_FILE));
    try {
      other.exec("BEGIN IMMEDIATE");
      other.exec("INSERT OR REPLACE INTO heartbeat (id, at) VALUES (1, 0)");
      const base = `http://127.0.0.1:${proxy.port}`;
      const sync = await fetch(`${base}/_matrix/client/v3/sync?since=0&timeout=0`, {
        headers: { authorization: "Bearer alice" },
      });
      expect(sync.status).toBe(200);
      expect(await sync.json()).toHaveProperty("next_batch");
      const refresh = await fetch(
        `${base}/_matrix/client/v3/user/${encodeURIComponent("@bob:remote.invalid")}/devices/refresh`,
        { method: "POST", headers: { authorization: "Bearer alice" } },
      );
      expect(refresh.status).toBe(503);
      expect(refresh.headers.get("retry-after")).toBe("5");
      await new Promise((r) => setTimeout(r, 300));
      expect(proxy.child.exitCode).toBeNull();
      expect((await fetch(`${base}/_resync/healthz`)).status).toBe(200);
      expect(proxy.stderr()).toContain("store failure");
    } finally {
      other.exec("ROLLBACK");
      other.close();
      proxy.child.kill("SIGKILL");
    }
  }, 60_000);
});

// The handlers from src/observe/last-resort.ts, installed in a process of the runtime under test.
const lastResort = new URL("../../src/observe/last-resort.ts", import.meta.url).href;
const logModule = new URL("../../src/observe/log.ts", import.meta.url).href;
const script = `
import { survivePanics } from ${JSON.stringify(lastResort)};
import { createLogger } from ${JSON.stringify(logModule)};
survivePanics(createLogger("info"));
Promise.reject(new Error("a stray rejection"));
setTimeout(() => { throw new Error("a stray exception"); }, 10);
setTimeout(() => { console.log("still alive"); process.exit(0); }, 300);
`;

describe.each(RUNTIMES.filter((rt) => rt.name !== "compiled binary"))("$name", (rt) => {
  test("a stray rejection and a stray exception are logged, and the process carries on", () => {
    const file = join(mkdtempSync(join(tmpdir(), "last-resort-")), "child.ts");
    writeFileSync(file, script);
    const r = spawnSync(rt.command[0]!, [...rt.command.slice(1, -1), file], { encoding: "utf8", timeout: 30_000 });
    expect(r.stdout).toContain("still alive");
    expect(r.status).toBe(0);
    expect(r.stderr).toContain("unhandled rejection (ignored; the proxy keeps running)");
    expect(r.stderr).toContain("a stray rejection");
    expect(r.stderr).toContain("uncaught exception (ignored; the proxy keeps running)");
    expect(r.stderr).toContain("a stray exception");
  });
});
