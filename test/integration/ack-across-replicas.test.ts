// An answer replica A splices is booked in the shared store (its position's suffix, tokens.ts)
// before any of it goes to the client, so the acknowledging poll finds the booking committed
// whichever replica it lands on (docs/architecture.md "Exact acknowledgements"). Here A's
// bookings are held back a whole second, far past anything a replica could wait for: the poll
// on replica B comes the moment A's answer has been read, and acknowledges it all the same.
import { afterAll, describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { startTestProxy, type TestEngine, useTestEngine } from "../helpers/proxy.ts";
import { closeTestStores, freshDatabase } from "../helpers/stores.ts";
import { startWorld, type World } from "../helpers/world.ts";

afterAll(closeTestStores);

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const SLIDING = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
const BOOKING_DELAY_MS = 1000;

/** Replica A (the world's proxy) and replica B on one fresh PostgreSQL database. */
async function twoReplicas(engine: TestEngine) {
  useTestEngine(engine);
  const database = await freshDatabase("postgres");
  const w = await startWorld(["--database", database]);
  const b = await startTestProxy(w.hs.url, [
    "--federation-ca",
    w.caPath,
    "--federation-allow-cidrs",
    "127.0.0.0/8",
    "--database",
    database,
  ]);
  let n = 0;
  w.hs.on("/_matrix/client/v3/sync", (_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ next_batch: `n${++n}`, rooms: {} }));
  });
  w.hs.on(SLIDING, (_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ pos: `p${++n}`, lists: {}, rooms: {}, extensions: {} }));
  });
  return { w, b };
}

/** Replica A's markCarried commits only after a delay (a slow pool, a busy event loop). */
function slowBookings(w: World): void {
  const store = w.proxy.services.store;
  const markCarried = store.markCarried.bind(store);
  store.markCarried = async (...args) => {
    await new Promise((r) => setTimeout(r, BOOKING_DELAY_MS));
    return markCarried(...args);
  };
}

const engines: TestEngine[] = isBun ? ["bun", "node"] : ["node"];

describe.each(engines)("acknowledgement across replicas (--engine %s)", (engine) => {
  test("/sync: the poll on replica B right after A's injected answer acknowledges it; nothing delivered again", async () => {
    const { w, b } = await twoReplicas(engine);
    try {
      const bob = `@bob:${w.remote.serverName}`;
      w.remote.setUser(makeUser(bob, { devices: ["DEV0"] }));
      const alice = w.login("alice", "ALICE1");
      const alice2 = w.login("alice", "ALICE2");
      expect((await w.refresh(bob, alice)).status).toBe(202);
      slowBookings(w);
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
      expect(await b.services.store.pendingFor("@alice:hs.test", "ALICE2")).toEqual([]);
    } finally {
      await b.close();
      await w.close();
    }
  });

  test("sliding sync: the same with `pos`, per connection", async () => {
    const { w, b } = await twoReplicas(engine);
    try {
      const bob = `@bob:${w.remote.serverName}`;
      w.remote.setUser(makeUser(bob, { devices: ["DEV0"] }));
      const alice = w.login("alice", "ALICE1");
      const alice2 = w.login("alice", "ALICE2");
      const slide = async (url: string, pos: string) =>
        (
          await fetch(`${url}${SLIDING}?pos=${pos}&timeout=0`, {
            method: "POST",
            headers: { authorization: `Bearer ${alice2}`, "content-type": "application/json" },
            body: JSON.stringify({ conn_id: "encryption", extensions: { e2ee: { enabled: true } } }),
          })
        ).json();
      // The connection asks for the e2ee extension before the change: it gets rows of its own.
      await slide(w.proxy.url, "p0");
      expect((await w.refresh(bob, alice)).status).toBe(202);
      slowBookings(w);
      const first = await slide(w.proxy.url, "p0");
      expect(first.extensions.e2ee.device_lists.changed).toEqual([bob]);
      const next = await slide(b.url, first.pos);
      expect(next.extensions?.e2ee?.device_lists?.changed ?? []).toEqual([]);
      expect(await b.services.store.pendingFor("@alice:hs.test", "ALICE2", "encryption")).toEqual([]);
    } finally {
      await b.close();
      await w.close();
    }
  });
});
