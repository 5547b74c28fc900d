// The homeserver's views are bounded (delivery/views.ts, maxViews; 200,000 by default): past the
// cap no new user's view is written, while the users already recorded keep being updated, and
// the bound holds across a restart (the count is read back from the store).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ClientPaths } from "../../src/http/client-paths.ts";
import type { HsView } from "../../src/matrix/device.ts";
import { Views } from "../../src/delivery/views.ts";
import { createLogger } from "../../src/observe/log.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import type { Store } from "../../src/store/store.ts";

let dir: string;
beforeEach(() => void (dir = mkdtempSync(join(tmpdir(), "views-cap-"))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const view = (userId: string, key: string): HsView => ({ userId, devices: { A: { "curve25519:A": key } }, seenAt: 1 });
const keyOf = (v: HsView | undefined) => v?.devices.A?.["curve25519:A"];
const views = (store: Store) =>
  new Views({ store, paths: undefined as unknown as ClientPaths, log: createLogger("error"), maxViews: 2 });

/** Record, let the store reads that decide new-or-changed answer, then write. */
async function recordNow(v: Views, list: HsView[]): Promise<void> {
  v.record(list);
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  await v.flush();
}

describe("the bound on the homeserver's views", () => {
  it("past the cap no new user is written; users already recorded are still updated, also after a restart", async () => {
    let store = await openSqliteStore(dir);
    let v = views(store);
    await recordNow(v, [view("@a:r.test", "k1"), view("@b:r.test", "k1")]);
    expect(v.count).toBe(2);
    await recordNow(v, [view("@c:r.test", "k1")]);
    expect(v.count).toBe(2);
    expect(await store.getView("@c:r.test")).toBeUndefined();
    expect(await store.countViews()).toBe(2);
    await recordNow(v, [view("@a:r.test", "k2")]);
    expect(keyOf(await store.getView("@a:r.test"))).toBe("k2");

    await v.close();
    await store.close();
    store = await openSqliteStore(dir);
    v = views(store);
    await expect.poll(() => v.count).toBe(2);
    await recordNow(v, [view("@d:r.test", "k1"), view("@b:r.test", "k2")]);
    expect(await store.getView("@d:r.test")).toBeUndefined();
    expect(keyOf(await store.getView("@b:r.test"))).toBe("k2");
    expect(await store.countViews()).toBe(2);
    await v.close();
    await store.close();
  });
});
