// The homeserver's views in the store (migration 4): durable across a reopen, and deleted with
// the last tracker of their user; the audit's walk over tracked targets.
// Both back ends (test/helpers/stores.ts).
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { BACKENDS, closeTestStores, freshDatabase, openDatabase } from "../helpers/stores.ts";

afterAll(closeTestStores);

const view = (userId: string, seenAt = 1) => ({
  userId,
  devices: { A: { "curve25519:A": "c", "ed25519:A": "e" }, ["__proto__"]: { "ed25519:__proto__": "p" } },
  master: "m",
  seenAt,
});

describe.each(BACKENDS)("views (%s)", (kind) => {
  let db: string;
  beforeEach(async () => void (db = await freshDatabase(kind)));

  it("survive a reopen, __proto__ device ids included", async () => {
    let s = await openDatabase(db);
    await s.putView(view("@b:r.test"));
    await s.close();
    s = await openDatabase(db);
    const v = (await s.getView("@b:r.test"))!;
    expect(Object.keys(v.devices).sort()).toEqual(["A", "__proto__"]);
    expect(v.master).toBe("m");
    expect(v.selfSigning).toBeUndefined();
    expect(await s.countViews()).toBe(1);
    await s.close();
  });

  it("expire with the last tracker of their user", async () => {
    const s = await openDatabase(db);
    await s.track("@a:hs.test", "A1", ["@b:r.test", "@c:r.test"], 100);
    await s.track("@a:hs.test", "A2", ["@c:r.test"], 500);
    await s.putView(view("@b:r.test"));
    await s.putView(view("@c:r.test"));
    expect(await s.expireTrackers(200)).toBe(2);
    expect(await s.getView("@b:r.test")).toBeUndefined();
    expect(await s.getView("@c:r.test")).toBeDefined();
    await s.close();
  });

  it("the audit walks distinct tracked targets in order, a page at a time", async () => {
    const s = await openDatabase(db);
    await s.track("@a:hs.test", "A1", ["@c:r.test", "@b:r.test"], 1);
    await s.track("@a:hs.test", "A2", ["@b:r.test", "@d:r.test"], 1);
    expect(await s.countTrackedTargets()).toBe(3);
    expect(await s.trackedTargetsAfter("", 2)).toEqual(["@b:r.test", "@c:r.test"]);
    expect(await s.trackedTargetsAfter("@c:r.test", 2)).toEqual(["@d:r.test"]);
    await s.close();
  });
});
