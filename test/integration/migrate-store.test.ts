// migrate-store (src/commands/migrate-store.ts): a store filled through the real proxy (a
// snapshot, the homeserver's view, trackers, pending deliveries, a retry and a destination's
// backoff) is copied into PostgreSQL with its counts verified; the proxy started on PostgreSQL
// then serves the same state (the overlay, the injection and its acknowledgement, the retry). A
// target that already holds state is refused, unless --existing-target replace.
import { afterAll, expect, test } from "vitest";
import { parseCli } from "../../src/config/config.ts";
import { runMigrateStore } from "../../src/commands/migrate-store.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import { makeUser } from "../helpers/fake-devices.ts";
import { closeTestStores, freshDatabase } from "../helpers/stores.ts";
import { startWorld } from "../helpers/world.ts";

afterAll(closeTestStores);

async function migrate(args: string[]): Promise<{ code: number; lines: string[] }> {
  const action = parseCli(["migrate-store", ...args], {});
  if (action.kind !== "run") throw new Error("unexpected CLI action");
  const lines: string[] = [];
  const code = await runMigrateStore(action.config, (l) => void lines.push(l));
  return { code, lines };
}

/** "  pending  2 in source  2 in target" → [2, 2]. */
const counted = (lines: string[], table: string) =>
  lines
    .find((l) => l.trim().startsWith(`${table} `))
    ?.match(/(\d+) in source\s+(\d+) in target/)
    ?.slice(1)
    .map(Number);

test("a store filled through the proxy moves to PostgreSQL, counts verified, and is served from there", async () => {
  const w = await startWorld(["--refresh-cache-ms", "0", "--retry-initial-ms", "600000"]);
  try {
    const bob = `@bob:${w.remote.serverName}`;
    const fay = `@fay:${w.remote.serverName}`;
    w.remote.setUser(makeUser(bob, { devices: ["DEV0", "DEV1"] }));
    // The homeserver still serves bob's old list: the fresh one is a change, kept as an overlay.
    const stale = makeUser(bob, { devices: ["DEV0"] });
    w.hs.on("/_matrix/client/v3/keys/query", (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ device_keys: { [bob]: { DEV0: stale.devices[0]!.keys } }, failures: {} }));
    });
    let n = 0;
    w.hs.on("/_matrix/client/v3/sync", (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ next_batch: `n${++n}`, rooms: {} }));
    });
    const alice = w.login("alice", "ALICE1");
    const alice2 = w.login("alice", "ALICE2");
    const carol = w.login("carol", "CAROL1");
    const api = (token: string, path: string, body?: unknown) =>
      fetch(w.proxy.url + path, {
        method: body === undefined ? "GET" : "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    await api(carol, "/_matrix/client/v3/keys/query", { device_keys: { [bob]: [] } });
    await expect.poll(() => w.proxy.services.heal!.views.get(bob)).toBeDefined();
    expect((await w.refresh(bob, alice)).status).toBe(202);
    // A destination answering 500: a retry entry, and the destination in backoff.
    w.remote.setBehaviour({ kind: "status", status: 500 }, { userId: fay });
    expect((await w.refresh(fay, alice)).status).toBe(502);
    await w.proxy.services.heal!.views.flush();
    await w.proxy.services.delivery.trackers.idle();

    const database = await freshDatabase("postgres");
    let result: { code: number; lines: string[] } | undefined;
    let inSource: Record<string, number> = {};
    await w.restartProxy(["--database", database], async () => {
      const s = await openSqliteStore(w.dataDir);
      inSource = {
        pending: await s.countPending(),
        hs_views: await s.countViews(),
        retries: (await s.listRetries()).length,
        backoffs: (await s.listBackoffs()).length,
        snapshots: (await s.listSnapshotUsers()).length,
      };
      await s.close();
      result = await migrate(["--from", `sqlite:${w.dataDir}`, "--to", database]);
    });
    expect(result!.code).toBe(0);
    expect(result!.lines.at(-1)).toBe("migrate-store: counts verified");
    // alice's two devices and carol, the tracker.
    expect(inSource).toEqual({ pending: 3, hs_views: 1, retries: 1, backoffs: 1, snapshots: 1 });
    for (const [table, rows] of Object.entries(inSource)) expect(counted(result!.lines, table)).toEqual([rows, rows]);
    expect(counted(result!.lines, "trackers")![0]).toBeGreaterThanOrEqual(3);

    // Served from PostgreSQL now: the overlay, the pending delivery and its acknowledgement.
    const kq = await (await api(alice, "/_matrix/client/v3/keys/query", { device_keys: { [bob]: [] } })).json();
    expect(Object.keys(kq.device_keys[bob]).sort()).toEqual(["DEV0", "DEV1"]);
    const got = await (await api(alice2, "/_matrix/client/v3/sync?since=s0&timeout=0")).json();
    expect(got.device_lists.changed).toEqual([bob]);
    const acked = await (await api(alice2, `/_matrix/client/v3/sync?since=${got.next_batch}&timeout=0`)).json();
    expect(acked.device_lists?.changed ?? []).toEqual([]);
    expect((await w.proxy.services.store.listRetries()).map((r) => r.userId)).toEqual([fay]);
    expect((await w.proxy.services.store.getBackoff(w.remote.serverName))?.failures).toBe(1);

    // Into a target that holds state: refused, unless told to replace it.
    await w.restartProxy([], async () => {
      const again = await migrate(["--from", `sqlite:${w.dataDir}`, "--to", database]);
      expect(again.code).toBe(1);
      expect(again.lines).toHaveLength(1);
      expect(again.lines[0]).toMatch(/already holds state \(\d+ rows\); refusing .*--existing-target replace/);
      const replaced = await migrate([
        "--from",
        `sqlite:${w.dataDir}`,
        "--to",
        database,
        "--existing-target",
        "replace",
      ]);
      expect(replaced.code).toBe(0);
      // The acknowledged row is back: the SQLite store never saw that acknowledgement.
      expect(counted(replaced.lines, "pending")).toEqual([3, 3]);
    });
  } finally {
    await w.close();
  }
});

test("copies only from SQLite into PostgreSQL, and says so in one line", async () => {
  const r = await migrate(["--from", "postgres://u@127.0.0.1:1/x", "--to", "sqlite:/tmp/none"]);
  expect(r).toEqual({
    code: 2,
    lines: [
      "migrate-store: copies from sqlite:DIR to postgres://…, not postgres://u@127.0.0.1:1/x to sqlite:/tmp/none",
    ],
  });
});
