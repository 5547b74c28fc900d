import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { Overlays } from "../../src/delivery/overlays.ts";
import { createLogger } from "../../src/observe/log.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import type { Store } from "../../src/store/store.ts";
import { snapshotFor } from "../helpers/bodies.ts";

const NOW = 1_700_000_000_000;
let dir: string;
let store: Store;
let reads: number;
let refetched: string[];

/** The store, counting the snapshot reads that reach it. */
function counted(s: Store): Store {
  return new Proxy(s, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver);
      if (key === "getSnapshot") return (u: string) => (reads++, target.getSnapshot(u));
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

const overlays = () =>
  new Overlays({
    store: counted(store),
    maxAgeMs: 60_000,
    refetch: (u) => refetched.push(u),
    log: createLogger("error", () => {}),
    now: () => NOW,
  });

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "overlays-"));
  store = await openSqliteStore(dir);
  reads = 0;
  refetched = [];
});
afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("Overlays serves snapshots without parsing them from the store each time", () => {
  test("a snapshot just fetched is served as it is, with no store read", async () => {
    const o = overlays();
    const s = snapshotFor("@bob:remote", 1000, { fetchedAt: NOW });
    await store.putSnapshot(s);
    o.noteSnapshot(s);
    for (let i = 0; i < 3; i++) expect((await o.servable(["@bob:remote"])).get("@bob:remote")).toBe(s);
    expect(reads).toBe(0);
  });

  test("after a restart the store is read once, then the parsed snapshot is kept", async () => {
    await store.putSnapshot(snapshotFor("@bob:remote", 3, { fetchedAt: NOW }));
    const o = overlays();
    await o.ready;
    const first = (await o.servable(["@bob:remote"])).get("@bob:remote");
    expect(first?.devices).toEqual(snapshotFor("@bob:remote", 3).devices);
    expect((await o.servable(["@bob:remote"])).get("@bob:remote")).toBe(first);
    expect(reads).toBe(1);
  });

  test("a newer snapshot replaces the kept one; a dropped one is not served again", async () => {
    const o = overlays();
    const old = snapshotFor("@bob:remote", 2, { fetchedAt: NOW, streamId: 1 });
    await store.putSnapshot(old);
    o.noteSnapshot(old);
    const fresh = snapshotFor("@bob:remote", 3, { fetchedAt: NOW, streamId: 2 });
    await store.putSnapshot(fresh);
    o.noteSnapshot(fresh);
    expect((await o.servable(["@bob:remote"])).get("@bob:remote")).toBe(fresh);
    await o.caughtUp(["@bob:remote"]);
    expect((await o.servable(["@bob:remote"])).size).toBe(0);
    expect(await store.getSnapshot("@bob:remote")).toBeUndefined();
  });

  test("too old: not served, fetched again", async () => {
    const o = overlays();
    const s = snapshotFor("@bob:remote", 2, { fetchedAt: NOW - 61_000 });
    await store.putSnapshot(s);
    o.noteSnapshot(s);
    expect((await o.servable(["@bob:remote"])).size).toBe(0);
    expect(refetched).toEqual(["@bob:remote"]);
  });
});
