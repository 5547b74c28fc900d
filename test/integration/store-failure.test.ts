// A failing store must never take the process down (issue 16 item 3). Another connection holds
// a real lock on the proxy's own SQLite file, as an operator's tool, a backup or a stuck
// process would; to the proxy that looks like a full disk or an I/O error. /sync and
// /keys/query then go through plain, a refresh answers 503 with Retry-After, /readyz fails, the
// failures are counted, and the process lives on. Both engines.
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createLogger } from "../../src/observe/log.ts";
import { startProxy } from "../../src/commands/serve.ts";
import { openSqliteDatabase } from "../../src/store/sqlite-driver.ts";
import { STORE_FILE } from "../../src/store/sqlite.ts";
import { type FakeHomeserver, startFakeHomeserver } from "../helpers/fake-homeserver.ts";
import { testConfig, type TestEngine } from "../helpers/proxy.ts";

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const ENGINES: TestEngine[] = isBun ? ["bun", "node"] : ["node"];

/** A way to make the store fail under the running proxy; returns how to undo it. */
type Breakage = (dataDir: string) => Promise<() => void>;

const BREAKAGES: [string, Breakage][] = [
  // Another connection holds SQLite's write lock: writes fail (SQLITE_BUSY), reads still work.
  [
    "another connection holds the write lock (BEGIN IMMEDIATE)",
    async (dataDir) => {
      const other = await openSqliteDatabase(join(dataDir, STORE_FILE));
      other.exec("BEGIN IMMEDIATE");
      other.exec("INSERT OR REPLACE INTO heartbeat (id, at) VALUES (1, 0)");
      return () => {
        other.exec("ROLLBACK");
        other.close();
      };
    },
  ],
  // The files refuse writes (EPERM, an I/O error to SQLite), as a failing disk's would. The
  // immutable attribute binds root too, and already open descriptors: chmod would do neither.
  [
    "the database files are unwritable (chattr +i)",
    async (dataDir) => {
      const files = [STORE_FILE, `${STORE_FILE}-wal`].map((f) => join(dataDir, f));
      execFileSync("chattr", ["+i", ...files]);
      return () => execFileSync("chattr", ["-i", ...files]);
    },
  ],
];

const auth = (token: string) => ({ authorization: `Bearer ${token}` });

describe.each(ENGINES)("a store locked by another connection (engine %s)", (engine) => {
  let hs: FakeHomeserver;
  let proxy: Awaited<ReturnType<typeof startProxy>>;
  let url: string;
  let ops: string;
  let dataDir: string;
  let undo: (() => void) | undefined;

  beforeEach(async () => {
    hs = await startFakeHomeserver();
    hs.tokens.set("warm", ["@carol:hs.test", "CAROL"]);
    hs.tokens.set("cold", ["@alice:hs.test", "ALICE"]);
    hs.on("/_matrix/client/v3/keys/query", (_req, res) => {
      const out = JSON.stringify({ device_keys: { "@bob:remote.test": {} }, failures: {} });
      res.writeHead(200, { "content-type": "application/json", "content-length": out.length });
      res.end(out);
    });
    const config = testConfig(hs.url, ["--metrics-listen", "127.0.0.1:0"], engine);
    dataDir = config.dataDir;
    proxy = await startProxy(
      config,
      createLogger("error", () => {}),
    );
    url = `http://127.0.0.1:${proxy.address.split(":").pop()}`;
    ops = `http://${proxy.opsAddress}`;
  });
  afterEach(async () => {
    undo?.();
    undo = undefined;
    await proxy.close(1000);
    await hs.close();
  });

  it.each(BREAKAGES)(
    "when %s: pass-through, 503 for refreshes, /readyz fails, the process lives",
    async (_what, breakStore) => {
      // This token's whoami is cached before the failure; "cold" is seen first under it.
      expect((await fetch(`${url}/_matrix/client/v3/sync?since=0&timeout=0`, { headers: auth("warm") })).status).toBe(
        200,
      );
      undo = await breakStore(dataDir);

      for (const token of ["cold", "warm", "cold"]) {
        const r = await fetch(`${url}/_matrix/client/v3/sync?since=0&timeout=0`, { headers: auth(token) });
        expect(r.status).toBe(200);
        expect(await r.json()).toHaveProperty("next_batch");
      }
      const sliding = await fetch(`${url}/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?pos=1&timeout=0`, {
        method: "POST",
        headers: auth("cold"),
        body: "{}",
      });
      expect(sliding.status).toBe(404); // the fake homeserver's own answer, passed through

      const kq = await fetch(`${url}/_matrix/client/v3/keys/query`, {
        method: "POST",
        headers: auth("cold"),
        body: JSON.stringify({ device_keys: { "@bob:remote.test": [] } }),
      });
      expect(kq.status).toBe(200);
      expect(await kq.json()).toEqual({ device_keys: { "@bob:remote.test": {} }, failures: {} });

      const changes = await fetch(`${url}/_matrix/client/v3/keys/changes?from=0&to=1`, { headers: auth("cold") });
      expect(changes.status).toBe(404); // passed through

      const refresh = await fetch(
        `${url}/_matrix/client/v3/user/${encodeURIComponent("@bob:remote.test")}/devices/refresh`,
        { method: "POST", headers: auth("cold") },
      );
      expect(refresh.status).toBe(503);
      expect(refresh.headers.get("retry-after")).toBe("5");
      expect(refresh.headers.get("access-control-allow-origin")).toBe("*");
      expect((await refresh.json()).errcode).toBe("M_UNKNOWN");

      const ready = await fetch(`${ops}/readyz`);
      expect(ready.status).toBe(503);
      expect((await ready.json()).checks.store).toMatch(/^not writable/);
      const metrics = await (await fetch(`${ops}/metrics`)).text();
      expect(metrics).toMatch(/^resync_store_errors_total\{operation="[a-zA-Z]+"\} [1-9]/m);

      // The fault goes: after the guard's cool-down, the store serves again.
      undo();
      undo = undefined;
      await new Promise((r) => setTimeout(r, 1100));
      expect((await (await fetch(`${ops}/readyz`)).json()).checks.store).toBe("ok");
      const again = await fetch(`${url}/_matrix/client/v3/sync?since=0&timeout=0`, { headers: auth("cold") });
      expect(again.status).toBe(200);
      expect((await fetch(`${url}/_resync/healthz`)).status).toBe(200);
    },
  );
});
