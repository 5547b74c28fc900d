// Trackers from /keys/query (delivery.ts trackQuery) on a real SQLite store: a device that
// queries keys keeps hearing of refreshes, and repeated queries do not each cost a durable write.
// Rows are written off the request path (tracker-writer.ts): `idle()` waits for the writes.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, expect, test } from "vitest";
import { Delivery } from "../../src/delivery/delivery.ts";
import { createLogger } from "../../src/observe/log.ts";
import { createUpstream } from "../../src/http/upstream.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import type { Store } from "../../src/store/store.ts";

const HOUR = 3_600_000,
  DAY = 24 * HOUR;
let dir: string;
let store: Store;
let writes: string[][];
let now: number;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "trackers-"));
  const real = await openSqliteStore(dir);
  writes = [];
  // The real store, with its track() calls recorded.
  const track = (u: string, d: string, t: string[], at: number, maxNew?: number) => {
    writes.push(t);
    return real.track(u, d, t, at, maxNew);
  };
  store = new Proxy(real, {
    get(target, key) {
      if (key === "track") return track;
      const v = Reflect.get(target, key);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  now = 1_000_000;
});
afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const delivery = (ttl = 7 * DAY, maxTrackersPerDevice?: number) =>
  new Delivery({
    store,
    upstream: createUpstream("http://127.0.0.1:1"),
    log: createLogger("error"),
    trackerTtlMs: ttl,
    maxTrackersPerDevice,
    now: () => now,
  });
const me = { userId: "@me:hs", deviceId: "D1", token: "t" };

test("repeated queries write a tracker once per tenth of the TTL (at most hourly), new targets at once", async () => {
  const d = delivery();
  d.trackQuery(me, ["@a:x", "@b:x"]);
  await d.trackers.idle();
  now += 60_000;
  d.trackQuery(me, ["@a:x", "@b:x"]);
  await d.trackers.idle();
  d.trackQuery(me, ["@a:x", "@c:x"]);
  await d.trackers.idle();
  now += HOUR;
  d.trackQuery(me, ["@a:x"]);
  await d.trackers.idle();
  expect(writes).toEqual([["@a:x", "@b:x"], ["@c:x"], ["@a:x"]]);
  expect(await store.trackersOf("@a:x")).toEqual([{ userId: "@me:hs", deviceId: "D1" }]);
});

test("the throttle follows a short TTL, so a device that keeps querying is never expired", async () => {
  const ttl = 10_000;
  const d = delivery(ttl);
  for (let i = 0; i < 30; i++) {
    d.trackQuery(me, ["@a:x"]);
    await d.trackers.idle();
    now += 900;
    await d.expireTrackers();
    expect(await store.trackersOf("@a:x")).toHaveLength(1);
  }
  expect(writes.length).toBe(15); // every second query (1.8 s apart): the first one ≥1 s (TTL/10) after the last write
  now += ttl + 1;
  await d.expireTrackers();
  expect(await store.trackersOf("@a:x")).toHaveLength(0);
});

const users = (n: number, from = 0) => Array.from({ length: n }, (_, i) => `@u${from + i}:remote.example`);
const rowsOf = async (d: string) => (await store.trackerCounts()).find((c) => c.deviceId === d)?.count ?? 0;

test("one device holds at most --max-trackers-per-device rows; queries past it refresh rows but add none", async () => {
  const d = delivery(7 * DAY, 150);
  d.trackQuery(me, users(100));
  await d.trackers.idle();
  expect(await rowsOf("D1")).toBe(100);
  d.trackQuery(me, users(100, 100));
  await d.trackers.idle();
  expect(await rowsOf("D1")).toBe(150);
  d.trackQuery({ ...me, deviceId: "D2" }, users(10));
  await d.trackers.idle();
  expect(await rowsOf("D2")).toBe(10); // another device has its own allowance
  now += DAY;
  d.trackQuery(me, users(10)); // already tracked: refreshed, not refused
  await d.trackers.idle();
  expect(await rowsOf("D1")).toBe(150);
  expect(await store.trackersOf("@u0:remote.example")).toContainEqual({ userId: "@me:hs", deviceId: "D1" });
});

test("a query naming 20,000 users is written in transactions of at most 500 rows, none of them inside the call", async () => {
  const d = delivery();
  d.trackQuery(me, users(20_000));
  expect(writes).toEqual([]); // queued: the request does not wait on the disk
  await d.trackers.idle();
  expect(writes.length).toBe(40);
  expect(Math.max(...writes.map((w) => w.length))).toBe(500);
  expect(await rowsOf("D1")).toBe(20_000);
});
