// An answer spliced by one replica is booked (markCarried) once its body has gone out; the
// client's next poll may land on another replica before that write does. That replica waits a
// moment for it rather than deliver the same change again (docs/architecture.md "Durable
// state", "Order across connections"). Here replica A's booking is held back 60 ms.
import { afterAll, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { startTestProxy } from "../helpers/proxy.ts";
import { closeTestStores, freshDatabase } from "../helpers/stores.ts";
import { startWorld } from "../helpers/world.ts";

afterAll(closeTestStores);

test("a poll on replica B acknowledges an answer replica A had not yet booked: not delivered again", async () => {
  const database = await freshDatabase("postgres");
  const w = await startWorld(["--database", database]);
  const flags = ["--federation-ca", w.caPath, "--federation-allow-cidrs", "127.0.0.0/8", "--database", database];
  const b = await startTestProxy(w.hs.url, flags);
  try {
    let n = 0;
    w.hs.on("/_matrix/client/v3/sync", (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ next_batch: `n${++n}`, rooms: {} }));
    });
    const bob = `@bob:${w.remote.serverName}`;
    w.remote.setUser(makeUser(bob, { devices: ["DEV0"] }));
    const alice = w.login("alice", "ALICE1");
    const alice2 = w.login("alice", "ALICE2");
    expect((await w.refresh(bob, alice)).status).toBe(202);
    // Replica A books the tokens of its spliced answers 60 ms late (a busy event loop, a slow pool).
    const store = w.proxy.services.store;
    const markCarried = store.markCarried.bind(store);
    store.markCarried = async (...args) => {
      await new Promise((r) => setTimeout(r, 60));
      return markCarried(...args);
    };
    const sync = async (url: string, since: string) =>
      (
        await fetch(`${url}/_matrix/client/v3/sync?since=${since}&timeout=0`, {
          headers: { authorization: `Bearer ${alice2}` },
        })
      ).json();
    const first = await sync(w.proxy.url, "s0");
    expect(first.device_lists.changed).toEqual([bob]);
    // At once, on the other replica, from the position that answer gave.
    const next = await sync(b.url, first.next_batch);
    expect(next.device_lists?.changed ?? []).toEqual([]);
  } finally {
    await b.close();
    await w.close();
  }
});
