// A replica started while PostgreSQL is down serves plain traffic anyway (docs/scaling.md,
// "Failures"): pass-through and plain /sync go through, /readyz fails on its store check, a
// refresh answers 503 with Retry-After; it keeps trying in the background, and when the database
// comes the same process migrates it and serves refreshes and injection, with no restart. Both
// engines. An error that waiting cannot cure (a role or a database that does not exist) still
// refuses to start, at once, with one line.
import { spawnSync } from "node:child_process";
import postgres from "postgres";
import { chmodSync } from "node:fs";
import { afterAll, afterEach, beforeAll, describe, expect, it, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { startTestProxy, type TestEngine, testConfig, useTestEngine } from "../helpers/proxy.ts";
import { startFakeHomeserver } from "../helpers/fake-homeserver.ts";
import { closeTestStores, freshDatabase, testPostgres } from "../helpers/stores.ts";
import { startWorld, type World } from "../helpers/world.ts";
import { startProxy } from "../../src/commands/serve.ts";
import { createLogger } from "../../src/observe/log.ts";
import { BINARY, ensureBinary } from "../blackbox/runtimes.ts";

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const ENGINES: TestEngine[] = isBun ? ["bun", "node"] : ["node"];
const auth = (token: string) => ({ authorization: `Bearer ${token}` });
const DOWN = /PostgreSQL is not reachable at start-up/;

beforeAll(async () => void (await testPostgres()));
afterAll(closeTestStores);

describe.each(ENGINES)("PostgreSQL down when the replica starts (engine %s)", (engine) => {
  let w: World | undefined;
  let stopped = false;
  afterEach(async () => {
    if (stopped) await (await testPostgres()).start();
    stopped = false;
    await w?.close();
    w = undefined;
    useTestEngine("auto");
  });

  it("serves pass-through and plain /sync, then everything once the database comes", async () => {
    const pg = await testPostgres();
    const database = await freshDatabase("postgres"); // empty: migrated when it comes
    await pg.stop();
    stopped = true;
    useTestEngine(engine);
    w = await startWorld([
      "--database",
      database,
      "--database-timeout-ms",
      "300",
      "--metrics-listen",
      "127.0.0.1:0",
      "--refresh-cache-ms",
      "0",
    ]);
    const world = w;
    const ops = `http://${world.proxy.opsAddress}`;
    const bob = `@bob:${world.remote.serverName}`;
    world.remote.setUser(makeUser(bob, { devices: ["DEV0"] }));
    const alice = world.login("alice", "ALICE1");
    const alice2 = world.login("alice", "ALICE2");
    world.hs.on("/_matrix/client/v3/keys/query", (_req, res) => {
      const out = JSON.stringify({ device_keys: { [bob]: {} }, failures: {} });
      res.writeHead(200, { "content-type": "application/json", "content-length": out.length });
      res.end(out);
    });

    // Pass-through and plain /sync.
    const sync = await fetch(`${world.proxy.url}/_matrix/client/v3/sync?since=s0&timeout=0`, { headers: auth(alice2) });
    expect(sync.status).toBe(200);
    expect(await sync.json()).toHaveProperty("next_batch");
    const kq = await fetch(`${world.proxy.url}/_matrix/client/v3/keys/query`, {
      method: "POST",
      headers: auth(alice),
      body: JSON.stringify({ device_keys: { [bob]: [] } }),
    });
    expect(kq.status).toBe(200);
    expect(await kq.json()).toEqual({ device_keys: { [bob]: {} }, failures: {} });
    const versions = await fetch(`${world.proxy.url}/_matrix/client/versions`);
    expect(versions.status).toBe(200);

    // Not ready, named by the store check; a refresh is refused as during any outage.
    const ready = await fetch(`${ops}/readyz`);
    expect(ready.status).toBe(503);
    expect((await ready.json()).checks.store).toMatch(/^not writable: .*not reachable/);
    const refused = await world.refresh(bob, alice);
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("5");
    expect(refused.headers.get("access-control-allow-origin")).toBe("*");
    expect((await refused.json()).errcode).toBe("M_UNKNOWN");

    // Several attempts later, still one line saying so (one per state change, not per attempt).
    await new Promise((r) => setTimeout(r, 1500));
    expect(world.proxy.logs.filter((l) => DOWN.test(l))).toHaveLength(1);

    // The database comes: the same process becomes ready and serves refreshes.
    await pg.start();
    stopped = false;
    await expect
      .poll(async () => (await (await fetch(`${ops}/readyz`)).json()).checks.store, { timeout: 15_000 })
      .toBe("ok");
    // Every other check as before the outage (the fake homeserver publishes no signing key).
    expect((await (await fetch(`${ops}/readyz`)).json()).checks).toMatchObject({ homeserver: "ok", whoami: "ok" });
    expect(world.proxy.logs.filter((l) => /PostgreSQL is reachable/.test(l))).toHaveLength(1);
    await expect.poll(async () => (await world.refresh(bob, alice)).status, { timeout: 10_000 }).toBe(202);
    // ... and delivered: alice's other device is told of bob's devices on its next /sync.
    const got = await (
      await fetch(`${world.proxy.url}/_matrix/client/v3/sync?since=s0&timeout=0`, { headers: auth(alice2) })
    ).json();
    expect(got.device_lists?.changed).toContain(bob);
  }, 60_000);
});

test("down at start, then answering without the database: one line per change, and served once it exists", async () => {
  const pg = await testPostgres();
  const name = `late_${process.pid}`;
  const url = pg.url.replace(/\/postgres$/, `/${name}`);
  const hs = await startFakeHomeserver();
  await pg.stop();
  let down = true;
  let proxy: Awaited<ReturnType<typeof startTestProxy>> | undefined;
  try {
    proxy = await startTestProxy(hs.url, [
      "--database",
      url,
      "--database-timeout-ms",
      "300",
      "--metrics-listen",
      "127.0.0.1:0",
    ]);
    const p = proxy;
    const ops = `http://${p.opsAddress}`;
    const count = (re: RegExp) => p.logs.filter((l) => re.test(l)).length;
    await pg.start();
    down = false;
    // The server answers, and refuses: said once, however many attempts follow.
    await expect
      .poll(() => count(/PostgreSQL refuses this replica \(the database does not exist\)/), { timeout: 10_000 })
      .toBe(1);
    await new Promise((r) => setTimeout(r, 1500));
    expect(count(/PostgreSQL refuses this replica/)).toBe(1);
    expect((await (await fetch(`${ops}/readyz`)).json()).checks.store).toMatch(/does not exist/);
    expect((await fetch(`${p.url}/_matrix/client/versions`)).status).toBe(200);
    await pg.createDatabase(name);
    await expect
      .poll(async () => (await (await fetch(`${ops}/readyz`)).json()).checks.store, { timeout: 15_000 })
      .toBe("ok");
    expect(count(/PostgreSQL is reachable/)).toBe(1);
    expect(count(/PostgreSQL is not reachable at start-up/)).toBe(1);
  } finally {
    if (down) await pg.start();
    await proxy?.close(1000);
    await hs.close();
  }
}, 60_000);

test("stopped while the database is still down: closes, and never connects afterwards", async () => {
  const pg = await testPostgres();
  const database = await freshDatabase("postgres");
  const name = database.slice(database.lastIndexOf("/") + 1);
  const hs = await startFakeHomeserver();
  await pg.stop();
  try {
    const proxy = await startTestProxy(hs.url, ["--database", database, "--database-timeout-ms", "300"]);
    expect((await fetch(`${proxy.url}/_matrix/client/versions`)).status).toBe(200);
    expect((await proxy.close(1000)).drained).toBe(true);
  } finally {
    await pg.start();
    await hs.close();
  }
  // Longer than the back-off's first steps: an attempt left running would have connected by now.
  await new Promise((r) => setTimeout(r, 1500));
  const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
  const [row] = await sql`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ${name}`;
  await sql.end();
  expect(row?.n).toBe(0);
}, 60_000);

// Each refuses at once (no wait would cure it): exit status 1, one line naming the cause.
const REFUSALS: [string, (url: string) => Promise<string>, RegExp][] = [
  [
    "a role that does not exist",
    async (u) => u.replace("postgres://postgres@", "postgres://nobody@"),
    /is not usable: role "nobody" does not exist/,
  ],
  [
    "a database that does not exist",
    async (u) => u.replace(/\/[^/]+$/, "/no_such_db"),
    /is not usable: database "no_such_db" does not exist/,
  ],
  [
    "a database a newer build migrated",
    async (u) => {
      const sql = postgres(u, { max: 1, onnotice: () => {} });
      await sql`CREATE TABLE schema_version (version integer NOT NULL)`;
      await sql`INSERT INTO schema_version VALUES (9999)`;
      await sql.end();
      return u;
    },
    /is not usable: store schema version 9999 is newer than this build supports/,
  ],
  ["a URL the client cannot parse", async (u) => u.replace(/:\d+\//, ":99999/"), /is not a valid PostgreSQL URL/],
];

test.each(REFUSALS)(
  "%s: refused at start-up, at once, with one line",
  async (_what, spoil, said) => {
    const database = await spoil(await freshDatabase("postgres"));
    const config = testConfig("http://127.0.0.1:9", ["--database", database]);
    await expect(
      startProxy(
        config,
        createLogger("error", () => {}),
      ),
    ).rejects.toThrow(said);
    // The shipped binary: exit status 1, and that one line on stderr.
    ensureBinary();
    chmodSync(config.signingKey!, 0o600);
    const flags = ["--upstream", "http://127.0.0.1:9", "--server-name", "hs.test", "--listen", "127.0.0.1:0"];
    const r = spawnSync(
      BINARY,
      [...flags, "--signing-key", config.signingKey!, "--data-dir", config.dataDir, "--database", database],
      { encoding: "utf8", timeout: 20_000 },
    );
    expect(r.status).toBe(1);
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(said);
    expect(lines[0]).toMatch(/^matrix-resync-proxy: store: postgres:\/\/\w+@127\.0\.0\.1:/);
  },
  120_000,
);
