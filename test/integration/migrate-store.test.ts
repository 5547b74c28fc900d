// migrate-store (src/commands/migrate-store.ts): a store filled through the real proxy (a
// snapshot, the homeserver's view, trackers, pending deliveries, a sliding-sync connection with
// its own pending delivery, a retry and a destination's backoff) is copied into PostgreSQL with
// its counts verified; the proxy started on PostgreSQL then serves the same state (the overlay,
// the injections and their acknowledgements, the retry). A target that already holds state is
// refused, unless --existing-target replace; a target that does not keep what it is given fails
// the count check. The compiled binary runs it too (exit code and output).
import { spawnSync } from "node:child_process";
import postgres from "postgres";
import { afterAll, expect, test } from "vitest";
import { parseCli } from "../../src/config/config.ts";
import { runMigrateStore } from "../../src/commands/migrate-store.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import { makeUser } from "../helpers/fake-devices.ts";
import { closeTestStores, freshDatabase } from "../helpers/stores.ts";
import { startWorld } from "../helpers/world.ts";
import { BINARY, ensureBinary } from "../blackbox/runtimes.ts";

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
    const dave = w.login("dave", "DAVE1");
    const api = (token: string, path: string, body?: unknown) =>
      fetch(w.proxy.url + path, {
        method: body === undefined ? "GET" : "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    await api(carol, "/_matrix/client/v3/keys/query", { device_keys: { [bob]: [] } });
    // dave tracks bob and keeps a simplified sliding sync connection with the e2ee extension
    // open: the refresh leaves a delivery pending for that connection too.
    await api(dave, "/_matrix/client/v3/keys/query", { device_keys: { [bob]: [] } });
    let slidePos = 0;
    w.hs.on(
      "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
      (_req, res) => void res.end(JSON.stringify({ pos: `p${++slidePos}`, lists: {}, rooms: {}, extensions: {} })),
    );
    const slide = async (pos: string) => {
      const r = await fetch(
        `${w.proxy.url}/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?pos=${pos}&timeout=0`,
        {
          method: "POST",
          headers: { authorization: `Bearer ${dave}`, "content-type": "application/json" },
          body: JSON.stringify({ conn_id: "encryption", lists: {}, extensions: { e2ee: { enabled: true } } }),
        },
      );
      return (await r.json()) as { pos: string; extensions: { e2ee?: { device_lists?: { changed?: string[] } } } };
    };
    const opened = await slide("p0");
    expect(opened.extensions.e2ee?.device_lists?.changed ?? []).toEqual([]);
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
    // alice's two devices, carol and dave, the trackers.
    expect(inSource).toEqual({ pending: 4, hs_views: 1, retries: 1, backoffs: 1, snapshots: 1 });
    for (const [table, rows] of Object.entries(inSource)) expect(counted(result!.lines, table)).toEqual([rows, rows]);
    // dave's connection, and bob's change pending on it.
    expect(counted(result!.lines, "sliding_conns")).toEqual([1, 1]);
    expect(counted(result!.lines, "sliding_pending")).toEqual([1, 1]);
    expect(counted(result!.lines, "trackers")![0]).toBeGreaterThanOrEqual(3);

    // Served from PostgreSQL now: the overlay, the pending delivery and its acknowledgement.
    const kq = await (await api(alice, "/_matrix/client/v3/keys/query", { device_keys: { [bob]: [] } })).json();
    expect(Object.keys(kq.device_keys[bob]).sort()).toEqual(["DEV0", "DEV1"]);
    const got = await (await api(alice2, "/_matrix/client/v3/sync?since=s0&timeout=0")).json();
    expect(got.device_lists.changed).toEqual([bob]);
    const acked = await (await api(alice2, `/_matrix/client/v3/sync?since=${got.next_batch}&timeout=0`)).json();
    expect(acked.device_lists?.changed ?? []).toEqual([]);
    // The connection came along: its next request carries bob, the one after acknowledges it.
    const carried = await slide(opened.pos);
    expect(carried.extensions.e2ee?.device_lists?.changed).toEqual([bob]);
    expect((await slide(carried.pos)).extensions.e2ee?.device_lists?.changed ?? []).toEqual([]);
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
      // The acknowledged rows are back: the SQLite store never saw those acknowledgements.
      expect(counted(replaced.lines, "pending")).toEqual([4, 4]);
      expect(counted(replaced.lines, "sliding_pending")).toEqual([1, 1]);

      // The compiled binary, into a target that silently drops the retries it is given (a
      // trigger left on it): the copy commits, the counts differ, it says so and exits 1.
      ensureBinary();
      const cli = () =>
        spawnSync(
          BINARY,
          ["migrate-store", "--from", `sqlite:${w.dataDir}`, "--to", database, "--existing-target", "replace"],
          { encoding: "utf8", timeout: 60_000 },
        );
      const sql = postgres(database, { max: 1, onnotice: () => {} });
      try {
        await sql.unsafe(`CREATE FUNCTION drop_row() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
          CREATE TRIGGER lossy BEFORE INSERT ON retries FOR EACH ROW EXECUTE FUNCTION drop_row()`);
        const lossy = cli();
        expect([lossy.status, lossy.stderr]).toEqual([1, ""]);
        const lines = lossy.stdout.trim().split("\n");
        expect(lines.filter((l) => l.includes("MISMATCH"))).toEqual([
          expect.stringMatching(/^ {2}retries +1 in source +0 in target {2}MISMATCH$/),
        ]);
        expect(lines.at(-1)).toBe("migrate-store: COUNTS DIFFER: do not start the proxy on the target");
        await sql.unsafe("DROP TRIGGER lossy ON retries; DROP FUNCTION drop_row()");
        const good = cli();
        expect([good.status, good.stderr]).toEqual([0, ""]);
        const out = good.stdout.trim().split("\n");
        expect(out[0]).toMatch(/^migrate-store: sqlite:\S+ -> postgres:\/\/\S+$/);
        expect(counted(out, "retries")).toEqual([1, 1]);
        expect(counted(out, "sliding_conns")).toEqual([1, 1]);
        expect(out.at(-1)).toBe("migrate-store: counts verified");
      } finally {
        await sql.end();
      }
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
