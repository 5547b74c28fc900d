// A device queries a remote user's keys through replica B; a moment later a refresh of that user
// (a real change at the remote) lands through replica A, whose fan-out reads the trackers before
// B's tracker write commits (docs/scaling.md, "Shared and per replica"). The device is still
// told, exactly once, whichever replica its long-poll is on. B's write is held by the test's own
// uncommitted row for the same (target, device) in PostgreSQL: B's insert waits on it, while
// every other tracker write (the refresher's own devices) goes through.
import { mkdtempSync, writeFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, expect, test } from "vitest";
import { startProxy, type RunningProxy } from "../../src/commands/serve.ts";
import { CLOCK_SLACK_MS } from "../../src/delivery/late-trackers.ts";
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
let sql: postgres.Sql;
let hs: FakeHomeserver;
let remote: FakeRemote;
let ca: TestCa;
const proxies: RunningProxy[] = [];

let syncCount = 0;
function serveSync(req: IncomingMessage, res: ServerResponse): void {
  const timeout = Number(new URL(req.url!, "http://x").searchParams.get("timeout") ?? 0);
  const answer = () => {
    if (res.writableEnded || res.destroyed) return;
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ next_batch: `s${++syncCount}`, rooms: {} }));
  };
  if (timeout > 0) setTimeout(answer, timeout);
  else answer();
}

beforeAll(async () => {
  pg = await startPostgres();
  const dbUrl = await pg.createDatabase("tracklate");
  sql = postgres(dbUrl, { max: 2, onnotice: () => {} });
  ca = createTestCa();
  const caPath = join(mkdtempSync(join(tmpdir(), "tracklate-")), "ca.pem");
  writeFileSync(caPath, ca.caPem);
  hs = await startFakeHomeserver("hs.test");
  // The homeserver knows no device of anyone: every list the remote gives is news.
  hs.on(
    "/_matrix/client/v3/keys/query",
    (_req, res) => void res.end(JSON.stringify({ device_keys: {}, failures: {} })),
  );
  hs.on("/_matrix/client/v3/sync", serveSync);
  remote = await startFakeRemote({ ca, trustedKeys: { "hs.test": { [OUR_KEY_ID]: OUR_PUBLIC_KEY } } });
  for (let i = 0; i < 2; i++) {
    const flags = ["--federation-ca", caPath, "--federation-allow-cidrs", "127.0.0.0/8", "--database", dbUrl];
    proxies.push(
      await startProxy(testConfig(hs.url, [...flags, "--refresh-cache-ms", "0", "--rate-target-burst", "100"]), log),
    );
  }
});

afterAll(async () => {
  for (const p of proxies) await p.close(1_000).catch(() => {});
  await sql?.end({ timeout: 1 });
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
const api = (p: RunningProxy, token: string, path: string, init: RequestInit = {}) =>
  fetch(`http://${p.address}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
  });
const refresh = (p: RunningProxy, target: string, token: string) =>
  api(p, token, `/_matrix/client/v3/user/${encodeURIComponent(target)}/devices/refresh`, {
    method: "POST",
    body: "{}",
  });
const keysQuery = async (p: RunningProxy, token: string, user: string) =>
  (
    await api(p, token, "/_matrix/client/v3/keys/query", {
      method: "POST",
      body: JSON.stringify({ device_keys: { [user]: [] } }),
    })
  ).json();
type SyncBody = { next_batch: string; device_lists?: { changed?: string[] } };
const sync = async (p: RunningProxy, token: string, since: string, timeout = 0) =>
  (await (await api(p, token, `/_matrix/client/v3/sync?timeout=${timeout}&since=${since}`)).json()) as SyncBody;
/** Sessions of the database waiting for a lock another holds. */
const waitingOnLock = async () =>
  Number((await sql`SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'`)[0]!.n);

/**
 * The test's own uncommitted tracker row for (target, device): B's insert of the same row waits
 * for it (a unique key held by an open transaction), and goes through once it is rolled back.
 */
async function holdTrackerRow(target: string, userId: string, deviceId: string): Promise<() => Promise<void>> {
  const tx = await sql.reserve();
  await tx`BEGIN`;
  await tx`INSERT INTO trackers (target, user_id, device_id, server_name, last_seen)
    VALUES (${target}, ${userId}, ${deviceId}, ${target.slice(target.indexOf(":") + 1)}, 0)`;
  return async () => {
    await tx`ROLLBACK`;
    tx.release();
  };
}

/** Resolves when this replica's fan-out for `target` next reads the trackers. */
function fanOutRead(p: RunningProxy, target: string): Promise<void> {
  const store = p.services.store;
  const trackersOf = store.trackersOf.bind(store);
  return new Promise((resolve) => {
    store.trackersOf = async (t: string) => {
      const found = await trackersOf(t);
      if (t === target) {
        store.trackersOf = trackersOf;
        resolve();
      }
      return found;
    };
  });
}

for (const pollOn of ["A", "B"] as const)
  test(`a device whose tracker write commits after another replica's fan-out read is told once (long-poll on ${pollOn})`, async () => {
    const [a, b] = proxies as [RunningProxy, RunningProxy];
    const bob = `@bob${pollOn}:${remote.serverName}`;
    const alice = login("alice", "ALICE1");
    const daveId = `DAVE${pollOn}`;
    const dave = login("dave", daveId);
    // A first list of bob, so the one the race is about is a real change.
    remote.setUser(makeUser(bob, { devices: ["DEV0"] }));
    expect((await refresh(a, bob, alice)).status).toBe(202);
    remote.setUser(makeUser(bob, { devices: ["DEV0", "DEV1"] }));

    // dave's position from which nothing is pending for him.
    const since = (await sync(b, dave, "s0")).next_batch;
    expect((await sync(b, dave, since)).device_lists?.changed ?? []).toEqual([]);

    const release = await holdTrackerRow(bob, "@dave:hs.test", daveId);
    // dave asks B for bob's keys: B's tracker write is queued, then waits on the held row.
    await keysQuery(b, dave, bob);
    await expect.poll(waitingOnLock, { timeout: 5000 }).toBe(1);
    const poller = pollOn === "A" ? a : b;
    const waiting = sync(poller, dave, since, 20_000);
    await expect
      .poll(() => hs.seen.some((s) => s.target.includes(`since=${since}`) && s.target.includes("timeout=20000")))
      .toBe(true);

    // bob's list really changed: A's fan-out reads the trackers while dave's is not written.
    const read = fanOutRead(a, bob);
    expect((await refresh(a, bob, alice)).status).toBe(202);
    await read;
    await release();

    const woke = await waiting;
    expect(woke.device_lists?.changed).toEqual([bob]);
    // Acknowledged by its own position: not named again.
    const next = await sync(b, dave, woke.next_batch);
    expect(next.device_lists?.changed ?? []).toEqual([]);
    expect(await b.services.store.pendingFor("@dave:hs.test", daveId)).toEqual([]);
  });

test("a device whose tracker was written before the fan-out read is told once, not again by the late path", async () => {
  const [a, b] = proxies as [RunningProxy, RunningProxy];
  const bob = `@bobC:${remote.serverName}`;
  const alice = login("alice", "ALICE1");
  const erin = login("erin", "ERIN1");
  remote.setUser(makeUser(bob, { devices: ["DEV0"] }));
  expect((await refresh(a, bob, alice)).status).toBe(202);
  remote.setUser(makeUser(bob, { devices: ["DEV0", "DEV1"] }));
  const since = (await sync(b, erin, "s0")).next_batch;

  await keysQuery(b, erin, bob);
  await b.services.delivery.trackers.idle();
  // Past the clock slack: the fan-out's read is certainly after the write (no doubt to resolve).
  await new Promise((r) => setTimeout(r, CLOCK_SLACK_MS + 100));
  expect((await refresh(a, bob, alice)).status).toBe(202);
  await expect.poll(() => a.services.store.pendingFor("@erin:hs.test", "ERIN1")).toHaveLength(1);
  const first = await sync(a, erin, since);
  expect(first.device_lists?.changed).toEqual([bob]);
  // Whatever either replica still does for this fan-out, the acknowledged row does not come back.
  expect((await sync(b, erin, first.next_batch)).device_lists?.changed ?? []).toEqual([]);
  await new Promise((r) => setTimeout(r, 300));
  expect(await b.services.store.pendingFor("@erin:hs.test", "ERIN1")).toEqual([]);
});
