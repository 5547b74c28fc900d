// Retries claimed with a lease (Store.claimDueRetries, resync/retry-loop.ts): two proxies sharing
// one PostgreSQL database run a due retry once between them, and a retry claimed by a replica
// that died is taken over once its lease ends (--retry-lease-ms).
import { afterAll, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { startTestProxy } from "../helpers/proxy.ts";
import { closeTestStores, freshDatabase, openDatabase } from "../helpers/stores.ts";
import { startWorld } from "../helpers/world.ts";

afterAll(closeTestStores);

test("two replicas run a due retry once; one claimed by a dead replica is taken over after its lease", async () => {
  const database = await freshDatabase("postgres");
  const w = await startWorld(["--database", database, "--retry-lease-ms", "1500"]);
  // The second replica: same homeserver, same database, its own data dir (for its socket).
  const flags = ["--federation-ca", w.caPath, "--federation-allow-cidrs", "127.0.0.0/8"];
  const other = await startTestProxy(w.hs.url, [...flags, "--database", database, "--retry-lease-ms", "1500"]);
  const store = await openDatabase(database);
  try {
    const now = Date.now();
    // A replica that claimed this one and was killed: nobody runs it until its lease ends.
    const orphan = `@orphan:${w.remote.serverName}`;
    w.remote.setUser(makeUser(orphan, { devices: ["D"] }));
    await store.putRetry({ userId: orphan, attempts: 1, dueAt: now, requestedBy: ["r"] });
    expect((await store.claimDueRetries(now, 10, "dead-replica", 2500)).map((r) => r.userId)).toEqual([orphan]);
    const users = Array.from({ length: 6 }, (_, i) => `@u${i}:${w.remote.serverName}`);
    for (const u of users) w.remote.setUser(makeUser(u, { devices: ["D"] }));
    for (const u of users) await store.putRetry({ userId: u, attempts: 1, dueAt: now, requestedBy: ["r"] });

    // The loops look at least every 30 s; restarting them is how a replica starts.
    w.proxy.services.resyncer.start();
    other.services.resyncer.start();
    await expect
      .poll(async () => (await store.listRetries()).map((r) => r.userId), { timeout: 10_000 })
      .toEqual([orphan]);
    for (const u of users) expect(w.remote.count({ userId: u, endpoint: "devices" })).toBe(1);
    expect(w.remote.count({ userId: orphan, endpoint: "devices" })).toBe(0);
    // Its lease ends 2.5 s after the claim: then one of the two takes it over, once.
    await expect.poll(async () => (await store.listRetries()).length, { timeout: 10_000 }).toBe(0);
    expect(w.remote.count({ userId: orphan, endpoint: "devices" })).toBe(1);
  } finally {
    await store.close();
    await other.close();
    await w.close();
  }
}, 30_000);
