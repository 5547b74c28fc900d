// A refresh on one replica that joins the fetch another replica is making (one fetch per target
// across replicas on one PostgreSQL, docs/scaling.md) and answers 202 while it runs: the
// fetching replica's fan-out read the trackers before this replica's tracker write committed,
// yet once the outcome lands, the requester's devices are told. The remote holds its answer;
// replica B's tracker write is held until replica A's fan-out has read the trackers.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { startProxy, type RunningProxy } from "../../src/commands/serve.ts";
import { createLogger } from "../../src/observe/log.ts";
import { makeUser } from "../helpers/fake-devices.ts";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { startFakeRemote, type FakeRemote } from "../helpers/fake-remote.ts";
import { startPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { testConfig } from "../helpers/proxy.ts";
import { createTestCa, type TestCa } from "../helpers/tls.ts";
import { OUR_KEY_ID, OUR_PUBLIC_KEY } from "../helpers/world.ts";

const log = createLogger("error", () => {});
let pg: TestPostgres;
let hs: FakeHomeserver;
let remote: FakeRemote;
let ca: TestCa;
const proxies: RunningProxy[] = [];

beforeAll(async () => {
  pg = await startPostgres();
  const dbUrl = await pg.createDatabase("joinlate");
  ca = createTestCa();
  const caPath = join(mkdtempSync(join(tmpdir(), "joinlate-")), "ca.pem");
  writeFileSync(caPath, ca.caPem);
  hs = await startFakeHomeserver("hs.test");
  // The homeserver's own answer knows no device of anyone: every fresh list is news.
  hs.on(
    "/_matrix/client/v3/keys/query",
    (_req, res) => void res.end(JSON.stringify({ device_keys: {}, failures: {} })),
  );
  remote = await startFakeRemote({ ca, trustedKeys: { "hs.test": { [OUR_KEY_ID]: OUR_PUBLIC_KEY } } });
  for (let i = 0; i < 2; i++) {
    const flags = ["--federation-ca", caPath, "--federation-allow-cidrs", "127.0.0.0/8", "--database", dbUrl];
    // 202 "pending" within 100 ms: the refreshes answer while the fetch is held.
    proxies.push(await startProxy(testConfig(hs.url, [...flags, "--refresh-wait-ms", "100"]), log));
  }
});

afterAll(async () => {
  for (const p of proxies) await p.close(1_000).catch(() => {});
  await remote?.close();
  await hs?.close();
  ca?.cleanup();
  await pg?.close();
});

const login = (localpart: string, deviceId: string) => {
  const token = `token_${localpart}_${deviceId}`;
  hs.tokens.set(token, [`@${localpart}:hs.test`, deviceId]);
  return token;
};
const refresh = (p: RunningProxy, target: string, token: string) =>
  fetch(`http://${p.address}/_matrix/client/v3/user/${encodeURIComponent(target)}/devices/refresh`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: "{}",
  });

test("a refresh joining another replica's fetch after its fan-out read the trackers still reaches its devices", async () => {
  const [a, b] = proxies as [RunningProxy, RunningProxy];
  const bob = `@bob:${remote.serverName}`;
  remote.setUser(makeUser(bob, { devices: ["DEV0"] }));
  const alice = login("alice", "ALICE1");
  const carol = login("carol", "CAROL1");
  // A's fan-out reads the trackers; B's tracker write for carol is held until after that read.
  const storeA = a.services.store;
  const trackersOf = storeA.trackersOf.bind(storeA);
  let read!: () => void;
  const fanOutRead = new Promise<void>((r) => (read = r));
  storeA.trackersOf = async (target: string) => {
    const found = await trackersOf(target);
    if (target === bob) read();
    return found;
  };
  const storeB = b.services.store;
  const track = storeB.track.bind(storeB);
  let writing!: () => void;
  const carolWriting = new Promise<void>((r) => (writing = r));
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  storeB.track = async (...args: Parameters<typeof track>) => {
    if (args[0] === "@carol:hs.test") {
      writing();
      await gate;
    }
    return track(...args);
  };

  const held = remote.hold({ userId: bob });
  expect((await refresh(a, bob, alice)).status).toBe(202);
  const carolAsked = refresh(b, bob, carol); // no snapshot yet: B joins A's fetch through the cluster
  await carolWriting;
  held.release();
  await fanOutRead;
  // Answered while its tracker write is still held: the outcome it waits for has not come.
  expect((await carolAsked).status).toBe(202);
  release();

  const targets = async (user: string, device: string) =>
    (await b.services.store.pendingFor(user, device)).map((p) => p.target);
  await expect.poll(() => targets("@alice:hs.test", "ALICE1"), { timeout: 5000 }).toEqual([bob]);
  await expect.poll(() => targets("@carol:hs.test", "CAROL1"), { timeout: 5000 }).toEqual([bob]);
  expect(remote.requests.filter((r) => r.userId === bob).length).toBe(1);
});
