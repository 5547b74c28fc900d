// A due retry whose replica is killed (kill -9) in the middle of its fetch is finished by another
// replica within the retry's lease plus one federation request's time, counted from the kill.
// The dead replica held two leases: the retry's claim (--retry-lease-ms, Store.claimDueRetries)
// and the one-fetch-per-user lease (cluster/pg-flight.ts), whose length follows
// --federation-timeout-ms. The bound below is that correctness bound, not a speed figure: with a
// fixed 30 s fetch lease the takeover waited 30 s whatever the two flags said.
import { afterAll, beforeAll, expect, test } from "vitest";
import { changedIn, type ReplicaWorld, startReplicaWorld } from "../blackbox/replicas-world.ts";
import { makeUser } from "../helpers/fake-devices.ts";
import { pidOfLocalPort } from "../helpers/replicas.ts";
import { closeTestStores, openDatabase } from "../helpers/stores.ts";

const RETRY_LEASE_MS = 5000;
const FETCH_TIMEOUT_MS = 6000;
let w: ReplicaWorld;

beforeAll(async () => {
  w = await startReplicaWorld({
    replicas: 2,
    extra: [
      "--refresh-cache-ms",
      "0",
      "--retry-initial-ms",
      "1000",
      "--retry-max-ms",
      "2000",
      "--detect",
      "off",
      "--retry-lease-ms",
      String(RETRY_LEASE_MS),
      "--federation-timeout-ms",
      String(FETCH_TIMEOUT_MS),
    ],
  });
}, 180_000);
afterAll(async () => {
  await closeTestStores();
  await w?.close();
}, 60_000);

test("kill -9 of the replica holding a retry's claim and its fetch: the other one finishes it within retry lease + one fetch timeout", async () => {
  const flaky = `@flaky:${w.remote.serverName}`;
  w.remote.setUser(makeUser(flaky, { devices: ["F1", "F2"] }));
  w.remote.setBehaviour({ kind: "status", status: 503 }, { userId: flaky });
  const [a, b] = w.replicas as [(typeof w.replicas)[0], (typeof w.replicas)[0]];
  const erin = w.login("erin", "ERIN1");
  expect((await w.keysQuery(a.port, erin, [flaky])).status).toBe(200); // erin tracks flaky
  const since = String((await w.sync(b.port, erin)).json?.next_batch);
  const failed = await w.refresh(a.port, flaky, w.login("requester"));
  expect(failed.status).toBe(502); // a retry is now due in about a second

  // The remote recovers but holds the retry's fetch: one replica has claimed the retry and holds
  // the fetch lease for flaky, mid-fetch.
  w.remote.clearBehaviours();
  const held = w.remote.hold({ userId: flaky, endpoint: "devices" });
  const fetches = () => w.remote.requests.filter((r) => r.userId === flaky && r.endpoint === "devices");
  const before = fetches().length;
  await w.remote.waitFor(() => fetches().length > before, 30_000);
  const claimed = fetches().at(-1)!;
  const holder = w.replicas.find((r) => r.pid === pidOfLocalPort(claimed.remotePort!, w.remote.port));
  expect(holder, "the retry's fetch came from a replica").toBeDefined();
  const alive = holder === a ? b : a;

  const store = await openDatabase(w.database);
  await holder!.kill();
  const killedAt = performance.now();
  held.release(); // the dead replica's request died with it; the next one is answered
  try {
    // Done: the live replica serves the fresh list and tells erin of it (a /sync from a position
    // of the homeserver's acknowledges nothing, so asking again is harmless). Polled for well
    // past the bound, so a miss shows by how much.
    const served = async () =>
      Object.keys(
        ((await w.keysQuery(alive.port, erin, [flaky])).json?.device_keys as Record<string, object> | undefined)?.[
          flaky
        ] ?? {},
      ).sort();
    const finished = async () =>
      (await served()).join() === "F1,F2" && changedIn(await w.sync(alive.port, erin, since)).includes(flaky);
    await expect.poll(finished, { timeout: 60_000, interval: 100 }).toBe(true);
    const tookMs = performance.now() - killedAt;
    expect(tookMs, `took ${Math.round(tookMs)} ms after the kill`).toBeLessThan(RETRY_LEASE_MS + FETCH_TIMEOUT_MS);
    // The other replica fetched it, once, and the retry is finished.
    expect(fetches().filter((r) => r.remotePort !== claimed.remotePort && fetches().indexOf(r) > before)).toHaveLength(
      1,
    );
    expect(await store.listRetries()).toEqual([]);
  } finally {
    await store.close();
  }
}, 120_000);
