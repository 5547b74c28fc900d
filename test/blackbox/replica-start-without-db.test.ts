// Issue 18: a compiled replica restarted while PostgreSQL is down (a crash, a deploy, a rolling
// restart during the outage) comes back and serves plain traffic, then becomes whole when the
// database returns, with no further restart (docs/scaling.md, "When something fails").
import { afterAll, expect, test } from "vitest";
import { startFakeHomeserver } from "../helpers/fake-homeserver.ts";
import { startReplicas, stopReplicas } from "../helpers/replicas.ts";
import { closeTestStores, freshDatabase, testPostgres } from "../helpers/stores.ts";

afterAll(closeTestStores);

test("a replica restarted during a PostgreSQL outage listens, passes through, and is ready once the database is back", async () => {
  const pg = await testPostgres();
  const hs = await startFakeHomeserver();
  hs.tokens.set("alice", ["@alice:hs.test", "ALICE"]);
  const database = await freshDatabase("postgres");
  const [a] = await startReplicas(1, { database, upstream: hs.url, extra: ["--database-timeout-ms", "300"] });
  const replica = a!;
  let down = false;
  try {
    await pg.stop();
    down = true;
    expect(await replica.stop()).toBe(0);
    await replica.start(); // resolves on its "listening" line: before this fix it exited 1
    const sync = await fetch(`http://127.0.0.1:${replica.port}/_matrix/client/v3/sync?timeout=0`, {
      headers: { authorization: "Bearer alice" },
    });
    expect(sync.status).toBe(200);
    const ready = await fetch(`http://127.0.0.1:${replica.opsPort}/readyz`);
    expect(ready.status).toBe(503);
    expect((await ready.json()).checks.store).toMatch(/not reachable yet/);

    await pg.start();
    down = false;
    await expect
      .poll(async () => (await (await fetch(`http://127.0.0.1:${replica.opsPort}/readyz`)).json()).checks.store, {
        timeout: 15_000,
      })
      .toBe("ok");
    expect(replica.running).toBe(true);
    const lines = replica.log().split("\n");
    expect(lines.filter((l) => l.includes("PostgreSQL is not reachable at start-up"))).toHaveLength(1);
    expect(lines.filter((l) => l.includes("PostgreSQL is reachable"))).toHaveLength(1);
  } finally {
    if (down) await pg.start();
    await stopReplicas([replica]);
    await hs.close();
  }
}, 90_000);
