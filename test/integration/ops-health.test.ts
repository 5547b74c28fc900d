// /healthz, /readyz and the healthcheck command against a live proxy over real sockets.
import { join } from "node:path";
import { afterEach, describe, expect, test } from "vitest";
import { signingKeyFromSeed } from "../../src/federation/signing.ts";
import { runHealthcheck } from "../../src/commands/healthcheck.ts";
import { STORE_FILE } from "../../src/store/sqlite.ts";
import { openSqliteDatabase } from "../../src/store/sqlite-driver.ts";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { publishKey, startLoggedProxy } from "./ops-helpers.ts";

type Proxy = Awaited<ReturnType<typeof startLoggedProxy>>;
const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => {});
});

async function world(opts: { publish?: boolean } = {}): Promise<{ hs: FakeHomeserver; proxy: Proxy }> {
  const hs = await startFakeHomeserver();
  cleanup.push(() => hs.close());
  if (opts.publish !== false) await publishKey(hs);
  const proxy = await startLoggedProxy(hs.url);
  cleanup.push(() => proxy.close(1000));
  await expect.poll(() => proxy.keyCheck(), { timeout: 10_000 }).toBeDefined();
  return { hs, proxy };
}

const readyz = async (p: Proxy) => {
  const res = await fetch(`${p.ops}/readyz`);
  return { status: res.status, body: (await res.json()) as { ready: boolean; checks: Record<string, string> } };
};

describe("/healthz and /readyz", () => {
  test("/healthz: the process is alive; /readyz: store, homeserver and key all ok", async () => {
    const { proxy } = await world();
    const h = await fetch(`${proxy.ops}/healthz`);
    expect(h.status).toBe(200);
    expect(await h.json()).toEqual({ status: "ok" });
    expect(await readyz(proxy)).toEqual({
      status: 200,
      body: { ready: true, checks: { store: "ok", homeserver: "ok", whoami: "ok", signing_key: "ok" } },
    });
  });

  test("/readyz fails while the store is not writable, and recovers", async () => {
    const { proxy } = await world();
    // Another connection holds the write lock: every write fails once busy_timeout runs out.
    const other = await openSqliteDatabase(join(proxy.config.dataDir, STORE_FILE));
    other.exec("BEGIN EXCLUSIVE");
    try {
      const r = await readyz(proxy);
      expect(r.status).toBe(503);
      expect(r.body.ready).toBe(false);
      expect(r.body.checks.store).toMatch(/^not writable: .*(locked|busy)/i);
      expect(r.body.checks.homeserver).toBe("ok");
    } finally {
      other.exec("ROLLBACK");
      other.close();
    }
    expect((await readyz(proxy)).status).toBe(200);
  });

  test("/readyz fails when the homeserver is down, and when it answers errors", async () => {
    const { hs, proxy } = await world();
    hs.on("/_matrix/client/versions", (_req, res) => {
      res.writeHead(502);
      res.end();
    });
    const bad = await readyz(proxy);
    expect(bad.status).toBe(503);
    expect(bad.body.checks.homeserver).toBe("answered 502");
    await hs.close();
    const down = await readyz(proxy);
    expect(down.status).toBe(503);
    expect(down.body.checks.homeserver).toMatch(/^unreachable: /);
    expect(down.body.checks.store).toBe("ok");
    // /healthz is liveness only: a dead homeserver is no reason to restart the proxy.
    expect((await fetch(`${proxy.ops}/healthz`)).status).toBe(200);
  });

  test("/readyz fails when the homeserver publishes a different key", async () => {
    const hs = await startFakeHomeserver();
    cleanup.push(() => hs.close());
    await publishKey(hs, signingKeyFromSeed(new Uint8Array(32).fill(7), "1"));
    const proxy = await startLoggedProxy(hs.url);
    cleanup.push(() => proxy.close(1000));
    await expect.poll(() => proxy.keyCheck(), { timeout: 10_000 }).toBeDefined();
    const r = await readyz(proxy);
    expect(r.status).toBe(503);
    expect(r.body.checks.signing_key).toMatch(/^mismatch: /);
  });

  test("/readyz answers 503 as soon as shutdown begins, while requests in flight finish", async () => {
    const { hs, proxy } = await world();
    let answer: () => void = () => {};
    hs.on("/_matrix/client/v3/sync", (_req, res) => {
      answer = () => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end('{"next_batch":"s2"}');
      };
    });
    const poll = fetch(`${proxy.url}/_matrix/client/v3/sync?since=s1&timeout=30000`);
    await expect.poll(() => hs.seen.some((r) => r.target.includes("/sync"))).toBe(true);
    const closing = proxy.close(20_000);
    const r = await readyz(proxy);
    expect(r.status).toBe(503);
    expect(r.body.checks.shutdown).toMatch(/^draining/);
    // New connections to the client listener are refused while the old request is served.
    await expect(fetch(`${proxy.url}/_resync/healthz`)).rejects.toThrow();
    answer();
    const res = await poll;
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ next_batch: "s2" });
    expect((await closing).drained).toBe(true);
  });
});

describe("healthcheck command", () => {
  test("exits 0 while the proxy answers (ops listener or client listener), 1 once it is gone", async () => {
    const { proxy } = await world();
    const viaOps = { ...proxy.config, metricsListen: proxy.opsAddress! };
    const viaClient = { ...proxy.config, metricsListen: undefined, listen: proxy.address };
    expect(await runHealthcheck(viaOps)).toBe(0);
    expect(await runHealthcheck(viaClient)).toBe(0);
    await proxy.close(1000);
    expect(await runHealthcheck(viaOps)).toBe(1);
    expect(await runHealthcheck(viaClient)).toBe(1);
  });
});
