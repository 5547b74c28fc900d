// The database is not in the path of plain traffic (docs/operations.md, "When the store fails"):
// with the proxy's state in PostgreSQL that is down (the server stopped) or slow (another
// session holds locks on our tables), /sync and /keys/query go through plain, a refresh answers
// 503 with Retry-After, /readyz fails, and the process lives; when the database is back,
// everything resumes with no restart of ours (the client reconnects by itself). Both engines.
// Then the same under load: clients syncing and refreshing while PostgreSQL stops and starts.
import postgres from "postgres";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, test } from "vitest";
import { createLogger } from "../../src/observe/log.ts";
import { startProxy } from "../../src/commands/serve.ts";
import { type FakeHomeserver, startFakeHomeserver } from "../helpers/fake-homeserver.ts";
import { makeUser } from "../helpers/fake-devices.ts";
import { testConfig, type TestEngine } from "../helpers/proxy.ts";
import { closeTestStores, freshDatabase, testPostgres } from "../helpers/stores.ts";
import { startWorld } from "../helpers/world.ts";

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const ENGINES: TestEngine[] = isBun ? ["bun", "node"] : ["node"];
const TABLES = "snapshots, backoffs, retries, pending, trackers, heartbeat, sliding_conns, sliding_pending, hs_views";

/** A way to make the database fail under the running proxy; returns how to undo it. */
type Breakage = (database: string) => Promise<() => Promise<void>>;

const BREAKAGES: [string, Breakage][] = [
  [
    "PostgreSQL is stopped",
    async () => {
      const pg = await testPostgres();
      await pg.stop();
      return () => pg.start();
    },
  ],
  [
    "another session holds every table locked (the database is slow)",
    async (database) => {
      const sql = postgres(database, { max: 1, onnotice: () => {} });
      const reserved = await sql.reserve();
      await reserved`BEGIN`;
      await reserved.unsafe(`LOCK TABLE ${TABLES} IN ACCESS EXCLUSIVE MODE`);
      return async () => {
        await reserved`ROLLBACK`;
        reserved.release();
        await sql.end();
      };
    },
  ],
];

const auth = (token: string) => ({ authorization: `Bearer ${token}` });

afterAll(closeTestStores);

describe.each(ENGINES)("PostgreSQL down or slow (engine %s)", (engine) => {
  let hs: FakeHomeserver;
  let proxy: Awaited<ReturnType<typeof startProxy>>;
  let url: string;
  let ops: string;
  let database: string;
  let undo: (() => Promise<void>) | undefined;

  beforeEach(async () => {
    hs = await startFakeHomeserver();
    hs.tokens.set("warm", ["@carol:hs.test", "CAROL"]);
    hs.tokens.set("cold", ["@alice:hs.test", "ALICE"]);
    hs.on("/_matrix/client/v3/keys/query", (_req, res) => {
      const out = JSON.stringify({ device_keys: { "@bob:remote.test": {} }, failures: {} });
      res.writeHead(200, { "content-type": "application/json", "content-length": out.length });
      res.end(out);
    });
    database = await freshDatabase("postgres");
    const config = testConfig(
      hs.url,
      ["--metrics-listen", "127.0.0.1:0", "--database", database, "--database-timeout-ms", "300"],
      engine,
    );
    proxy = await startProxy(
      config,
      createLogger("error", () => {}),
    );
    url = `http://127.0.0.1:${proxy.address.split(":").pop()}`;
    ops = `http://${proxy.opsAddress}`;
  });
  afterEach(async () => {
    await undo?.();
    undo = undefined;
    await proxy.close(1000);
    await hs.close();
  });

  it.each(BREAKAGES)(
    "when %s: pass-through, 503 for refreshes, /readyz fails, then all resumes",
    async (_w, breakIt) => {
      expect((await fetch(`${url}/_matrix/client/v3/sync?since=0&timeout=0`, { headers: auth("warm") })).status).toBe(
        200,
      );
      undo = await breakIt(database);

      for (const token of ["cold", "warm", "cold"]) {
        const r = await fetch(`${url}/_matrix/client/v3/sync?since=0&timeout=0`, { headers: auth(token) });
        expect(r.status).toBe(200);
        expect(await r.json()).toHaveProperty("next_batch");
      }
      const kq = await fetch(`${url}/_matrix/client/v3/keys/query`, {
        method: "POST",
        headers: auth("cold"),
        body: JSON.stringify({ device_keys: { "@bob:remote.test": [] } }),
      });
      expect(kq.status).toBe(200);
      expect(await kq.json()).toEqual({ device_keys: { "@bob:remote.test": {} }, failures: {} });

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

      // The database comes back: the same process serves from it again.
      await undo();
      undo = undefined;
      await expect
        .poll(async () => (await (await fetch(`${ops}/readyz`)).json()).checks.store, { timeout: 10_000 })
        .toBe("ok");
      const again = await fetch(`${url}/_matrix/client/v3/sync?since=0&timeout=0`, { headers: auth("cold") });
      expect(again.status).toBe(200);
    },
  );
});

test("PostgreSQL stopped and started while clients sync and refresh: no failure beyond 503, then all resumes", async () => {
  // `serve` logs and survives any fault no handler caught (observe/last-resort.ts), which would
  // hide one here: every such fault, ours or the postgres client's (3.4.9 threw from its own
  // timers when a connection died while it reconnected), fails this test, with its stack.
  const panics: string[] = [];
  const onPanic = (e: unknown) => void panics.push(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.on("uncaughtException", onPanic);
  process.on("unhandledRejection", onPanic);
  const database = await freshDatabase("postgres");
  const w = await startWorld([
    "--database",
    database,
    "--database-timeout-ms",
    "300",
    "--refresh-cache-ms",
    "0",
    "--rate-user-burst",
    "10000",
    "--rate-target-burst",
    "10000",
  ]);
  try {
    let tokens = 0;
    w.hs.on("/_matrix/client/v3/sync", (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ next_batch: `n${++tokens}`, rooms: {} }));
    });
    const bob = `@bob:${w.remote.serverName}`;
    let generation = 0;
    w.remote.setUser(makeUser(bob, { devices: ["DEV0"] }));
    const alice = w.login("alice", "ALICE1");
    const alice2 = w.login("alice", "ALICE2");
    // Pending before the outage: committed, so it outlives it.
    expect((await w.refresh(bob, alice)).status).toBe(202);

    const statuses = new Map<number, number>();
    let stop = false;
    const load = async (token: string, refresher: boolean) => {
      while (!stop) {
        const r = refresher
          ? await w.refresh(bob, token)
          : await fetch(`${w.proxy.url}/_matrix/client/v3/sync?since=s0&timeout=0`, { headers: auth(token) });
        await r.arrayBuffer();
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        if (!refresher) expect(r.status).toBe(200);
        else expect([202, 503]).toContain(r.status);
      }
    };
    const clients = Array.from({ length: 8 }, (_, i) => w.login(`c${i}`, `C${i}`));
    const running = clients.map((t, i) => load(t, i % 2 === 0));
    const pg = await testPostgres();
    await new Promise((r) => setTimeout(r, 300));
    await pg.stop();
    await new Promise((r) => setTimeout(r, 1500));
    await pg.start();
    await new Promise((r) => setTimeout(r, 300));
    // Back: refreshes are accepted again, with no restart of the proxy.
    await expect.poll(async () => (await w.refresh(bob, alice)).status, { timeout: 10_000 }).toBe(202);
    stop = true;
    await Promise.all(running);
    // Past the guard's cool-down and the client's reconnect back-off (at most 1 s each).
    await new Promise((r) => setTimeout(r, 2000));
    expect(statuses.get(503) ?? 0).toBeGreaterThan(0); // the outage was seen
    expect([...statuses.keys()].every((s) => s === 200 || s === 202 || s === 503)).toBe(true);

    // A real change after the restart reaches alice's other device, which acknowledges it.
    w.remote.setUser(makeUser(bob, { devices: ["DEV0", `DEV${++generation}`] }));
    expect((await w.refresh(bob, alice)).status).toBe(202);
    const got = await (
      await fetch(`${w.proxy.url}/_matrix/client/v3/sync?since=s0&timeout=0`, { headers: auth(alice2) })
    ).json();
    expect(got.device_lists.changed).toContain(bob);
    const acked = await (
      await fetch(`${w.proxy.url}/_matrix/client/v3/sync?since=${got.next_batch}&timeout=0`, { headers: auth(alice2) })
    ).json();
    expect(acked.device_lists?.changed ?? []).not.toContain(bob);
    // Nothing escaped: no store failure as an unhandled rejection, no fault of the client.
    expect(panics).toEqual([]);
  } finally {
    await w.close();
    process.off("uncaughtException", onPanic);
    process.off("unhandledRejection", onPanic);
  }
}, 60_000);

beforeAll(async () => void (await testPostgres()));
