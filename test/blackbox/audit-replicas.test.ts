// The audit across compiled replicas (docs/scaling.md "The audit"): two processes on one
// PostgreSQL, as deployed. One of them audits; SIGTERM it and the other goes on with the pass
// where it stood, within a third of the lease (the lease is released as the replica drains).
// Kill -9 and the lease's expiry are in test/integration/audit-replicas.test.ts (a 30 s lease
// here would make this file slow).
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { openPostgresStore } from "../../src/store/postgres.ts";
import { makeUser } from "../helpers/fake-devices.ts";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { startFakeRemote, type FakeRemote } from "../helpers/fake-remote.ts";
import { startPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { counter, type Replica, startReplicas, stopReplicas } from "../helpers/replicas.ts";
import { createTestCa, type TestCa } from "../helpers/tls.ts";
import { OUR_KEY_ID, OUR_PUBLIC_KEY } from "../helpers/world.ts";

// 60 users at a budget of 2 a second: a pass takes 30 s, longer than this file runs.
const USERS = 60;

let pg: TestPostgres;
let hs: FakeHomeserver;
let remote: FakeRemote;
let ca: TestCa;
let replicas: Replica[] = [];
let users: string[] = [];

const fetched = () => remote.requests.filter((r) => r.authorized && r.endpoint === "devices").map((r) => r.userId!);
const auditors = async () => {
  const out: Replica[] = [];
  for (const r of replicas) if (r.running && (await counter(r, "resync_audit_checked_total")) > 0) out.push(r);
  return out;
};

beforeAll(async () => {
  pg = await startPostgres();
  const database = await pg.createDatabase("audit");
  ca = createTestCa();
  const caPath = join(mkdtempSync(join(tmpdir(), "audit-bb-")), "ca.pem");
  writeFileSync(caPath, ca.caPem);
  hs = await startFakeHomeserver("hs.test");
  hs.on(
    "/_matrix/client/v3/keys/query",
    (_req, res) => void res.end(JSON.stringify({ device_keys: {}, failures: {} })),
  );
  remote = await startFakeRemote({ ca, trustedKeys: { "hs.test": { [OUR_KEY_ID]: OUR_PUBLIC_KEY } } });
  users = Array.from({ length: USERS }, (_, i) => `@u${String(i).padStart(3, "0")}:${remote.serverName}`);
  for (const u of users) remote.setUser(makeUser(u));
  const store = await openPostgresStore(database, { max: 1 });
  await store.track("@alice:hs.test", "ALICEDEV", users, Date.now());
  await store.close();
  replicas = await startReplicas(2, {
    database,
    upstream: hs.url,
    caPath,
    // Every check reaches the remote: the cache would hide a second replica checking a user.
    extra: ["--refresh-cache-ms", "0", "--audit-interval-ms", "20000", "--audit-max-per-second", "2"],
  });
}, 180_000);

afterAll(async () => {
  await stopReplicas(replicas);
  await remote?.close();
  await hs?.close();
  ca?.cleanup();
  await pg?.close();
});

test("two compiled replicas audit as one; SIGTERM the holder and the other goes on with the pass", async () => {
  await expect.poll(() => fetched().length, { timeout: 20_000, interval: 100 }).toBeGreaterThanOrEqual(4);
  const who = await auditors();
  expect(who.length).toBe(1);
  const holder = who[0]!;
  expect(fetched()).toEqual(users.slice(0, fetched().length));
  expect(await holder.stop()).toBe(0);
  const before = fetched().length;
  // The released lease is taken at the other replica's next claim: a third of 30 s.
  await expect.poll(() => fetched().length, { timeout: 20_000, interval: 100 }).toBeGreaterThanOrEqual(before + 3);
  const seen = fetched();
  expect(seen).toEqual(users.slice(0, seen.length));
  const other = replicas.find((r) => r !== holder)!;
  expect(await counter(other, "resync_audit_checked_total")).toBeGreaterThanOrEqual(3);
  expect(other.log()).toMatch(/"msg":"audit lease taken: the pass goes on"/);
}, 60_000);
