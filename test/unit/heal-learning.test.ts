// A fresh list is compared with what clients were last shown. The homeserver's answers are read
// after the client has been answered (resync/self-heal.ts), so a client may act on an answer
// (and a fresh list arrive) before we have read it: the comparison waits for that reading.
// Regression: a re-check after the homeserver reported a change saw the record from before
// the report, took it to be behind, and dropped a real change undelivered.
import { describe, expect, it } from "vitest";
import type { Delivery } from "../../src/delivery/delivery.ts";
import type { Overlays } from "../../src/delivery/overlays.ts";
import type { ViewParser } from "../../src/delivery/view-parser.ts";
import { Views } from "../../src/delivery/views.ts";
import type { ClientPaths } from "../../src/http/client-paths.ts";
import type { DeviceSnapshot, HsView } from "../../src/matrix/device.ts";
import { createLogger } from "../../src/observe/log.ts";
import { Healer } from "../../src/resync/heal.ts";
import { learnKeysQuery, type SelfHeal } from "../../src/resync/self-heal.ts";
import type { Store } from "../../src/store/store.ts";

const bob = "@bob:remote.test";
const log = createLogger("error");

// Only what Views and Healer use, answering in microtasks: without the wait, the comparison
// would be over before the answer's reading (a macrotask later) could land.
const store = {
  countViews: async () => 0,
  getView: async () => undefined,
  putViews: async () => {},
  getSnapshot: async () => undefined,
  putSnapshot: async () => {},
} as unknown as Store;

const device = (id: string) => ({ user_id: bob, device_id: id, keys: { [`curve25519:${id}`]: `key-${id}` } });

describe("a fresh list after the homeserver reported a change", () => {
  it("is compared with the answer clients were shown, even while that answer is still being read", async () => {
    // The clock only orders the report after the old record; the answer is read at Date.now().
    const views = new Views({ store, paths: undefined as unknown as ClientPaths, log, now: () => 10 });
    const old: HsView = { userId: bob, devices: { DEV0: device("DEV0").keys }, seenAt: 5 };
    views.record([old]);
    views.reported([bob]); // our record (seen at 5) is behind the homeserver's report (at 10)

    // The reading thread finds the same answer as before (read after the report), a timer later.
    const parser = {
      summarize: () => new Promise<"same">((r) => setTimeout(() => r("same"), 0)),
    } as unknown as ViewParser;
    const delivered: string[] = [];
    const delivery = { onSnapshot: async (s: DeviceSnapshot) => void delivered.push(s.userId) } as unknown as Delivery;
    const overlays = { noteSnapshot() {}, caughtUp: async () => {} } as unknown as Overlays;
    const healer = new Healer({ store, views, overlays, delivery, log });
    const h: SelfHeal = { views, parser, healer };

    // A client is shown the homeserver's answer (DEV0 only, as before): read in the background.
    const who = { userId: "@alice:hs.test", deviceId: "A", token: "t" };
    learnKeysQuery(h, who, { [bob]: [] }, [bob], [Buffer.from("{}")]);
    // Then the fresh list, with no token to ask the homeserver with (a re-check).
    const fresh: DeviceSnapshot = {
      userId: bob,
      streamId: 2,
      devices: { DEV0: device("DEV0"), DEV1: device("DEV1") },
      fetchedAt: Date.now(),
    };
    const outcome = healer.onFresh(fresh, { trigger: "audit" } as Parameters<Healer["onFresh"]>[1]);
    expect(await outcome).toBe(true);
    expect(delivered).toEqual([bob]);
  });
});
