// The audit reads every tracked user's view once a pass. Such a read must not fill the views
// cache: over a pass of 10,000 users it held every view until the next pass (docs/performance.md
// "Tenth session"). Any other reader still caches what it read.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Delivery } from "../../src/delivery/delivery.ts";
import type { Overlays } from "../../src/delivery/overlays.ts";
import type { DeviceSnapshot, HsView } from "../../src/matrix/device.ts";
import { Healer } from "../../src/resync/heal.ts";
import { Views } from "../../src/delivery/views.ts";
import { createLogger } from "../../src/observe/log.ts";
import type { ClientPaths } from "../../src/http/client-paths.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import type { Store } from "../../src/store/store.ts";

let dir: string;
beforeEach(() => void (dir = mkdtempSync(join(tmpdir(), "views-keep-"))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const view = (userId: string): HsView => ({ userId, devices: { A: { "curve25519:A": "k" } }, seenAt: 1 });

/** The store, counting the view rows read from it. */
function counted(s: Store): { store: Store; reads: string[] } {
  const reads: string[] = [];
  const store = new Proxy(s, {
    get(t, k) {
      if (k === "getView") return (u: string) => (reads.push(u), t.getView(u));
      const f = Reflect.get(t, k) as unknown;
      return typeof f === "function" ? (f as (...a: unknown[]) => unknown).bind(t) : f;
    },
  });
  return { store, reads };
}

describe("reading a view", () => {
  it("with keep: false answers from the store without caching; a plain read caches", async () => {
    const raw = await openSqliteStore(dir);
    await raw.putViews([view("@b:r.test"), view("@c:r.test")]);
    const { store, reads } = counted(raw);
    const views = new Views({ store, paths: undefined as unknown as ClientPaths, log: createLogger("error") });

    expect((await views.get("@b:r.test", { keep: false }))?.devices.A).toEqual({ "curve25519:A": "k" });
    expect((await views.getOrQuery("@b:r.test", undefined, { keep: false }))?.userId).toBe("@b:r.test");
    expect(reads).toEqual(["@b:r.test", "@b:r.test"]); // read twice: nothing was kept

    await views.get("@c:r.test");
    await views.get("@c:r.test");
    await views.get("@c:r.test", { keep: false }); // a cached view is answered from memory
    expect(reads.slice(2)).toEqual(["@c:r.test"]);
    await views.close();
    await raw.close();
  });
});

describe("a fresh list the audit checks", () => {
  it("is compared with the view read from the store, which is not kept; other triggers keep it", async () => {
    const raw = await openSqliteStore(dir);
    await raw.putViews([view("@b:r.test"), view("@c:r.test")]);
    const { store, reads } = counted(raw);
    const views = new Views({ store, paths: undefined as unknown as ClientPaths, log: createLogger("error") });
    const delivery = { onSnapshot: async () => {} } as unknown as Delivery;
    const overlays = { noteSnapshot() {}, caughtUp: async () => {} } as unknown as Overlays;
    const healer = new Healer({ store, views, overlays, delivery, log: createLogger("error") });
    const same = (userId: string): DeviceSnapshot => ({
      userId,
      streamId: 1,
      devices: { A: { user_id: userId, device_id: "A", keys: { "curve25519:A": "k" } } },
      fetchedAt: 2,
    });
    type Ctx = Parameters<Healer["onFresh"]>[1];
    for (let i = 0; i < 2; i++) {
      expect(await healer.onFresh(same("@b:r.test"), { trigger: "audit", walk: true } as Ctx)).toBe(false);
      expect(await healer.onFresh(same("@c:r.test"), { trigger: "to_device" } as Ctx)).toBe(false);
    }
    expect(reads.filter((u) => u === "@b:r.test").length).toBe(2);
    expect(reads.filter((u) => u === "@c:r.test").length).toBe(1);
    await views.close();
    await raw.close();
  });
});
