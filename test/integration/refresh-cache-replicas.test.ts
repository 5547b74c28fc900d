// A refresh inside the cache window is answered the same whichever replica serves it: as one
// process answers it (202 from the last outcome, no fetch, no target token), even with more
// replicas than the target's burst and a list the homeserver already serves (an unchanged list
// is not stored as a snapshot, so the other replicas learn of it only from the shared lease
// row, cluster/pg-flight.ts). The per-requester limit still holds on every replica. Real sockets
// throughout: the fake homeserver, the fake remote over HTTPS, four proxies (both engines).
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startProxy, type RunningProxy } from "../../src/commands/serve.ts";
import { createLogger } from "../../src/observe/log.ts";
import { type FakeUser, makeUser } from "../helpers/fake-devices.ts";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { startFakeRemote, type FakeRemote } from "../helpers/fake-remote.ts";
import { startPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { testConfig, type TestEngine } from "../helpers/proxy.ts";
import { createTestCa, type TestCa } from "../helpers/tls.ts";
import { OUR_KEY_ID, OUR_PUBLIC_KEY } from "../helpers/world.ts";

const log = createLogger("error", () => {});
// Fewer target tokens than replicas, none regained during the test.
const TARGET_BURST = 2;
// Both engines where Bun runs (the Bun front end exists only there).
const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const ENGINES: TestEngine[] = isBun ? ["bun", "node", "bun", "node"] : ["node", "node", "node", "node"];

let pg: TestPostgres;
let hs: FakeHomeserver;
let remote: FakeRemote;
let ca: TestCa;
const replicas: { proxy: RunningProxy; url: string }[] = [];
// What the homeserver's /keys/query serves: exactly the remote's list (nothing is news).
const hsUsers = new Map<string, FakeUser>();
let n = 0;

const user = (name: string) => `@${name}:${remote.serverName}`;
function login(localpart: string): string {
  const token = `token_${localpart}`;
  hs.tokens.set(token, [`@${localpart}:hs.test`, `${localpart.toUpperCase()}DEV`]);
  return token;
}
const refresh = (url: string, target: string, token: string) =>
  fetch(`${url}/_matrix/client/v3/user/${encodeURIComponent(target)}/devices/refresh`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: "{}",
  });

beforeAll(async () => {
  pg = await startPostgres();
  const dbUrl = await pg.createDatabase("refresh_cache");
  ca = createTestCa();
  const caPath = join(mkdtempSync(join(tmpdir(), "refresh-cache-")), "ca.pem");
  writeFileSync(caPath, ca.caPem);
  hs = await startFakeHomeserver("hs.test");
  hs.on("/_matrix/client/v3/keys/query", (_req, res, body) => {
    const asked = Object.keys((JSON.parse(body.toString()) as { device_keys: Record<string, unknown> }).device_keys);
    const out = { device_keys: {} as Record<string, unknown>, master_keys: {} as Record<string, unknown> };
    const selfSigning: Record<string, unknown> = {};
    for (const u of asked) {
      const known = hsUsers.get(u);
      if (!known) continue;
      out.device_keys[u] = Object.fromEntries(known.devices.map((d) => [d.device_id, d.keys]));
      if (known.masterKey) out.master_keys[u] = known.masterKey;
      if (known.selfSigningKey) selfSigning[u] = known.selfSigningKey;
    }
    res.end(JSON.stringify({ ...out, self_signing_keys: selfSigning, failures: {} }));
  });
  remote = await startFakeRemote({ ca, trustedKeys: { "hs.test": { [OUR_KEY_ID]: OUR_PUBLIC_KEY } } });
  for (const engine of ENGINES) {
    const config = testConfig(
      hs.url,
      [
        ...["--federation-ca", caPath, "--federation-allow-cidrs", "127.0.0.0/8"],
        ...["--database", dbUrl, "--database-timeout-ms", "10000"],
        ...["--refresh-wait-ms", "3000", "--refresh-cache-ms", "60000"],
        ...["--rate-target-burst", String(TARGET_BURST), "--rate-target-per-minute", "1"],
      ],
      engine,
    );
    const proxy = await startProxy(config, log);
    replicas.push({ proxy, url: `http://${proxy.address}` });
  }
});

afterAll(async () => {
  for (const r of replicas) await r.proxy.close(1_000).catch(() => {});
  await remote?.close();
  await hs?.close();
  ca?.cleanup();
  await pg?.close();
});

describe(`${ENGINES.length} replicas, a target burst of ${TARGET_BURST}`, () => {
  test("an unchanged list inside the cache window: every replica answers 202 from it, with no further fetch", async () => {
    const target = user(`same${++n}`);
    const u = makeUser(target, { devices: 2 });
    remote.setUser(u);
    hsUsers.set(target, u);
    const statuses: string[] = [];
    for (const [i, r] of replicas.entries()) {
      const res = await refresh(r.url, target, login(`asker${n}x${i}`));
      statuses.push(`${ENGINES[i]} ${res.status}${res.status === 202 ? "" : ` ${await res.text()}`}`);
    }
    expect(statuses).toEqual(ENGINES.map((e) => `${e} 202`));
    // Once more on each, as a single process answers a second ask: from the cache.
    for (const r of replicas) expect((await refresh(r.url, target, login(`again${n}`))).status).toBe(202);
    expect(remote.count({ userId: target, endpoint: "devices" })).toBe(1);
  });

  test("a fetch in flight on one replica: refreshes on every other join it, as they would in one process", async () => {
    const target = user(`held${++n}`);
    const u = makeUser(target);
    remote.setUser(u);
    hsUsers.set(target, u);
    const held = remote.hold({ userId: target });
    const first = refresh(replicas[0]!.url, target, login(`first${n}`));
    await remote.waitFor(() => remote.inFlight > 0, 10_000);
    const others = replicas.slice(1).map((r, i) => refresh(r.url, target, login(`joiner${n}x${i}`)));
    await new Promise((r) => setTimeout(r, 300)); // each has asked by now
    held.release();
    const statuses = await Promise.all([first, ...others].map(async (p) => (await p).status));
    expect(statuses).toEqual(ENGINES.map(() => 202));
    expect(remote.count({ userId: target, endpoint: "devices" })).toBe(1);
  });

  test("no flood through the cache: a requester's 11th refresh of a cached list gets 429 on every replica", async () => {
    const target = user(`flood${++n}`);
    const u = makeUser(target);
    remote.setUser(u);
    hsUsers.set(target, u);
    const token = login(`flooder${n}`);
    for (let i = 0; i < 10; i++)
      expect((await refresh(replicas[i % replicas.length]!.url, target, token)).status).toBe(202);
    for (const r of replicas) {
      const res = await refresh(r.url, target, token);
      expect(res.status).toBe(429);
      expect((await res.json()).errcode).toBe("M_LIMIT_EXCEEDED");
      expect(res.headers.get("retry-after")).not.toBeNull();
    }
    expect(remote.count({ userId: target, endpoint: "devices" })).toBe(1);
  });
});
