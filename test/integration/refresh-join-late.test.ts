// A refresh that joins a fetch whose fan-out has already read the trackers (its own tracker
// write came too late to be among them) and answers 202 while the fetch is still running: once
// the fetch lands, its requester's devices are told all the same (docs/scaling.md, "Known
// defects" as was). The remote holds its answer; the store's tracker read of the target is held
// after it has read, so the fan-out is over the old trackers while the joiner asks.
import { describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { type TestEngine, useTestEngine } from "../helpers/proxy.ts";
import { startWorld } from "../helpers/world.ts";

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const engines: TestEngine[] = isBun ? ["bun", "node"] : ["node"];

describe.each(engines)("--engine %s", (engine) => {
  test("a refresh joining after the fan-out read the trackers still reaches its devices", async () => {
    useTestEngine(engine);
    // 202 "pending" within 100 ms: both refreshes answer while the fetch is held.
    const w = await startWorld(["--refresh-wait-ms", "100"]);
    try {
      const bob = `@bob:${w.remote.serverName}`;
      w.remote.setUser(makeUser(bob, { devices: ["DEV0"] }));
      const alice = w.login("alice", "ALICE1");
      const carol = w.login("carol", "CAROL1");
      const store = w.proxy.services.store;

      const trackersOf = store.trackersOf.bind(store);
      let read!: () => void;
      const fanOutRead = new Promise<void>((r) => (read = r));
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      store.trackersOf = async (target: string) => {
        const found = await trackersOf(target);
        if (target === bob) {
          read();
          await gate; // the fan-out has read; carol's write lands after it
        }
        return found;
      };

      const held = w.remote.hold({ userId: bob });
      expect((await w.refresh(bob, alice)).status).toBe(202);
      held.release();
      await fanOutRead;
      expect((await w.refresh(bob, carol)).status).toBe(202); // joined the running fetch, late
      release();

      const targets = async (user: string, device: string) =>
        (await store.pendingFor(user, device)).map((p) => p.target);
      await expect.poll(() => targets("@alice:hs.test", "ALICE1"), { timeout: 5000 }).toEqual([bob]);
      await expect.poll(() => targets("@carol:hs.test", "CAROL1"), { timeout: 5000 }).toEqual([bob]);
    } finally {
      await w.close();
    }
  });
});
