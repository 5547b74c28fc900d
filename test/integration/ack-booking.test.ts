// An injected answer's position is booked before the answer goes out (docs/architecture.md
// "Exact acknowledgements"). When that write fails, the answer goes through as the homeserver
// gave it: nothing injected, nothing the client could acknowledge, the delivery still pending.
// Here another connection holds the real write lock on the proxy's SQLite file (reads still
// work, so the plan sees the pending row; the booking cannot be written). Both engines.
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { STORE_FILE } from "../../src/store/sqlite.ts";
import { openSqliteDatabase } from "../../src/store/sqlite-driver.ts";
import { makeUser } from "../helpers/fake-devices.ts";
import { type TestEngine, useTestEngine } from "../helpers/proxy.ts";
import { startWorld } from "../helpers/world.ts";

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const engines: TestEngine[] = isBun ? ["bun", "node"] : ["node"];

describe.each(engines)("the booking of an injected answer fails (--engine %s)", (engine) => {
  test("the answer passes through plain, and the delivery waits for the store", async () => {
    useTestEngine(engine);
    const w = await startWorld();
    try {
      let n = 0;
      w.hs.on("/_matrix/client/v3/sync", (_req, res) => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ next_batch: `n${++n}`, rooms: {} }));
      });
      const bob = `@bob:${w.remote.serverName}`;
      w.remote.setUser(makeUser(bob, { devices: ["DEV0"] }));
      const alice = w.login("alice", "ALICE1");
      const alice2 = w.login("alice", "ALICE2");
      expect((await w.refresh(bob, alice)).status).toBe(202);
      const sync = async (since: string) =>
        (
          await fetch(`${w.proxy.url}/_matrix/client/v3/sync?since=${since}&timeout=0`, {
            headers: { authorization: `Bearer ${alice2}` },
          })
        ).json();

      const other = await openSqliteDatabase(join(w.dataDir, STORE_FILE));
      other.exec("BEGIN IMMEDIATE");
      other.exec("INSERT OR REPLACE INTO heartbeat (id, at) VALUES (1, 0)");
      let plain: { next_batch: string; device_lists?: { changed?: string[] } };
      try {
        plain = await sync("s0");
      } finally {
        other.exec("ROLLBACK");
        other.close();
      }
      expect(plain.device_lists?.changed ?? []).toEqual([]);
      expect(plain.next_batch).toBe("n1");

      // The store is back (past the guard's cool-down): delivered, then acknowledged.
      let got = plain;
      await expect
        .poll(async () => (got = await sync(plain.next_batch)).device_lists?.changed ?? [], { timeout: 5000 })
        .toEqual([bob]);
      const next = await sync(got.next_batch);
      expect(next.device_lists?.changed ?? []).toEqual([]);
      expect(await w.proxy.services.store.pendingFor("@alice:hs.test", "ALICE2")).toEqual([]);
    } finally {
      await w.close();
    }
  });
});
