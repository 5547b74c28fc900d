// The audit across replicas on one PostgreSQL (docs/scaling.md "The audit"): one replica at a
// time holds its lease and walks the tracked users, so N replicas make the federation checks of
// one, under one budget; a replica stopped or killed hands the walk to another, which continues
// the pass where it stood instead of starting it again. Real sockets: the fake homeserver, the
// fake remote over HTTPS, three proxies on a real PostgreSQL.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { PgCluster } from "../../src/cluster/pg-cluster.ts";
import { startProxy, type RunningProxy } from "../../src/commands/serve.ts";
import { createLogger } from "../../src/observe/log.ts";
import { openPostgresStore } from "../../src/store/postgres.ts";
import { makeUser } from "../helpers/fake-devices.ts";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { startFakeRemote, type FakeRemote } from "../helpers/fake-remote.ts";
import { startPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { testConfig } from "../helpers/proxy.ts";
import { createTestCa, type TestCa } from "../helpers/tls.ts";
import { OUR_KEY_ID, OUR_PUBLIC_KEY } from "../helpers/world.ts";

const LEASE_MS = 1_500;
const USERS = 80;
// 80 users in 8 s would be 10 a second: the budget of 5 is what paces the walk (a pass: 16 s,
// longer than this file runs, so no user is due twice while it runs).
const BUDGET = 5;
const log = createLogger("error", () => {});

interface Replica {
  proxy: RunningProxy;
  cluster: PgCluster;
}

let pg: TestPostgres;
let dbUrl: string;
let hs: FakeHomeserver;
let remote: FakeRemote;
let ca: TestCa;
let caPath: string;
const replicas: Replica[] = [];
let users: string[] = [];

// The cluster is opened here only to shorten its lease (a kill is simulated below).
async function startReplica(): Promise<Replica> {
  const cluster = await PgCluster.open({ url: dbUrl, log, leaseMs: LEASE_MS, deadlineMs: 10_000 });
  const config = testConfig(hs.url, [
    "--federation-ca",
    caPath,
    "--federation-allow-cidrs",
    "127.0.0.0/8",
    "--database",
    dbUrl,
    "--database-timeout-ms",
    "10000",
    // Every check reaches the remote: a second replica checking the same user is not hidden
    // by the cache.
    "--refresh-cache-ms",
    "0",
    "--audit-interval-ms",
    "8000",
    "--audit-max-per-second",
    String(BUDGET),
  ]);
  const proxy = await startProxy(config, log, { cluster });
  const r = { proxy, cluster };
  replicas.push(r);
  return r;
}

const checked = async (r: Replica) => (await r.proxy.services.metrics!.auditChecked.get()).values[0]?.value ?? 0;
const auditors = async () => {
  const out: Replica[] = [];
  for (const r of replicas) if ((await checked(r)) > 0) out.push(r);
  return out;
};
/** The users the remote was asked about, in order. */
const fetched = () => remote.requests.filter((r) => r.authorized && r.endpoint === "devices").map((r) => r.userId!);
const waitForFetches = (n: number) =>
  expect.poll(() => fetched().length, { timeout: 10_000, interval: 50 }).toBeGreaterThanOrEqual(n);

beforeAll(async () => {
  pg = await startPostgres();
  dbUrl = await pg.createDatabase("audit");
  ca = createTestCa();
  const dir = mkdtempSync(join(tmpdir(), "audit-replicas-"));
  caPath = join(dir, "ca.pem");
  writeFileSync(caPath, ca.caPem);
  hs = await startFakeHomeserver("hs.test");
  hs.on(
    "/_matrix/client/v3/keys/query",
    (_req, res) => void res.end(JSON.stringify({ device_keys: {}, failures: {} })),
  );
  remote = await startFakeRemote({ ca, trustedKeys: { "hs.test": { [OUR_KEY_ID]: OUR_PUBLIC_KEY } } });
  users = Array.from({ length: USERS }, (_, i) => `@u${String(i).padStart(3, "0")}:${remote.serverName}`);
  for (const u of users) remote.setUser(makeUser(u));
  // Tracked before any replica starts, so the first pass has them all.
  const store = await openPostgresStore(dbUrl, { max: 1 });
  await store.track("@alice:hs.test", "ALICEDEV", users, Date.now());
  await store.close();
  for (let i = 0; i < 3; i++) await startReplica();
});

afterAll(async () => {
  for (const r of replicas) await r.proxy.close(1_000).catch(() => {});
  await remote?.close();
  await hs?.close();
  ca?.cleanup();
  await pg?.close();
});

describe("the audit over 3 replicas on one PostgreSQL", () => {
  let started = 0;
  let holder: Replica;

  test("one replica audits: no user is checked twice, and the checks keep to one budget", async () => {
    started = performance.now();
    await waitForFetches(10);
    const elapsedS = (performance.now() - started) / 1000;
    const seen = fetched();
    expect(new Set(seen).size).toBe(seen.length);
    // One walk in order: the tracked users from the first on.
    expect(seen).toEqual(users.slice(0, seen.length));
    const who = await auditors();
    expect(who.length).toBe(1);
    holder = who[0]!;
    // The budget of one auditor (3 replicas each on their own would make three times this),
    // plus the check a replica makes as it starts its pass.
    expect(seen.length).toBeLessThanOrEqual(Math.ceil(BUDGET * elapsedS) + 2);
  });

  test("the holder stopped (SIGTERM): another replica continues the pass where it stood", async () => {
    const before = fetched().length;
    await holder.proxy.close(1_000);
    replicas.splice(replicas.indexOf(holder), 1);
    await waitForFetches(before + 8);
    const seen = fetched();
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen).toEqual(users.slice(0, seen.length));
    const who = await auditors();
    expect(who.length).toBe(1);
    holder = who[0]!;
  });

  test("the holder killed (its lease neither renewed nor released): another takes over once the lease expires", async () => {
    const before = fetched().length;
    // As after kill -9: the killed replica's sessions to PostgreSQL are gone.
    await holder.cluster.close();
    replicas.splice(replicas.indexOf(holder), 1);
    await waitForFetches(before + 8);
    const seen = fetched();
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen).toEqual(users.slice(0, seen.length));
    const last = replicas[0]!;
    expect(await checked(last)).toBeGreaterThan(0);
    await holder.proxy.close(500).catch(() => {});
  });
});
