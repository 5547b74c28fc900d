import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { MIGRATIONS, migrate, SCHEMA_VERSION, schemaVersion } from "../../src/store/migrations.ts";
import { openSqliteStore, STORE_FILE } from "../../src/store/sqlite.ts";
import { openSqliteDatabase } from "../../src/store/sqlite-driver.ts";
import type { DeviceSnapshot } from "../../src/matrix/device.ts";
import type { Store } from "../../src/store/store.ts";
import { triggerOf } from "../../src/resync/resync-types.ts";
import { BACKENDS, freshDatabase, openDatabase, closeTestStores } from "../helpers/stores.ts";

let dir: string;
let store: Store;
const opened: Store[] = [];
async function open(d = dir, opts = {}): Promise<Store> {
  const s = await openSqliteStore(d, opts);
  opened.push(s);
  return s;
}

beforeEach(async () => {
  dir = join(mkdtempSync(join(tmpdir(), "store-test-")), "data", "nested");
  store = await open();
});
afterEach(async () => {
  for (const s of opened.splice(0)) await s.close();
  rmSync(join(dir, "..", ".."), { recursive: true, force: true });
});
afterAll(closeTestStores);

const snap = (userId: string, extra: Partial<DeviceSnapshot> = {}): DeviceSnapshot => ({
  userId,
  streamId: 7,
  devices: {
    DEV1: {
      user_id: userId,
      device_id: "DEV1",
      keys: { "ed25519:DEV1": "k" },
      unsigned: { device_display_name: "Phone 😀" },
    },
  },
  fetchedAt: 1_700_000_000_000,
  ...extra,
});

describe.each(BACKENDS)("the %s store", (kind) => {
  let location: string;
  beforeEach(async () => {
    location = await freshDatabase(kind);
    store = await openDatabase(location);
    opened.push(store);
  });

  it("keeps every kind of row for the next opener of the same database", async () => {
    await store.putSnapshot(snap("@a:x"));
    await store.putBackoff({ destination: "x", failures: 1, retryAt: 2, lastProbeAt: 3 });
    await store.putRetry({ userId: "@a:x", attempts: 1, dueAt: 2, requestedBy: ["r"] });
    await store.addPending([{ userId: "@me:h", deviceId: "D", target: "@a:x" }]);
    await store.markCarried("@me:h", "D", ["@a:x"], "t");
    await store.openConn("@me:h", "D", "c", 4);
    await store.track("@me:h", "D", ["@a:x"], 5);
    await store.putView({ userId: "@a:x", devices: { D: {} }, seenAt: 6 });
    await store.close();
    const s = await openDatabase(location);
    opened.push(s);
    expect(await s.getSnapshot("@a:x")).toEqual(snap("@a:x"));
    expect(await s.getBackoff("x")).toEqual({ destination: "x", failures: 1, retryAt: 2, lastProbeAt: 3 });
    expect((await s.getRetry("@a:x"))?.requestedBy).toEqual(["r"]);
    expect(await s.pendingFor("@me:h", "D")).toEqual([{ target: "@a:x", carriedIn: ["t"] }]);
    expect(await s.pendingFor("@me:h", "D", "c")).toEqual([{ target: "@a:x", carriedIn: [] }]);
    expect(await s.trackersOf("@a:x")).toEqual([{ userId: "@me:h", deviceId: "D" }]);
    expect((await s.getView("@a:x"))?.seenAt).toBe(6);
    expect(await s.countViews()).toBe(1);
  });

  describe("snapshots", () => {
    it("round-trips with and without cross-signing keys, overwrites, deletes, lists", async () => {
      expect(await store.getSnapshot("@a:x")).toBeUndefined();
      const full = snap("@a:x", { masterKey: { usage: ["master"] }, selfSigningKey: { usage: ["self_signing"] } });
      await store.putSnapshot(full);
      await store.putSnapshot(snap("@b:y"));
      expect(await store.getSnapshot("@a:x")).toEqual(full);
      const bare = await store.getSnapshot("@b:y");
      expect(bare).toEqual(snap("@b:y"));
      expect(bare && "masterKey" in bare).toBe(false);
      await store.putSnapshot(snap("@a:x", { streamId: 8, devices: {} }));
      expect(await store.getSnapshot("@a:x")).toEqual(snap("@a:x", { streamId: 8, devices: {} }));
      expect(await store.listSnapshotUsers()).toEqual(["@a:x", "@b:y"]);
      await store.deleteSnapshot("@a:x");
      expect(await store.getSnapshot("@a:x")).toBeUndefined();
      expect(await store.listSnapshotUsers()).toEqual(["@b:y"]);
    });
  });

  describe("snapshots: devices that failed validation", () => {
    it("round-trips invalidDevices, and leaves it absent when there are none", async () => {
      const withInvalid = snap("@a:x", { invalidDevices: ["DEHYDRATED", "__proto__"] });
      await store.putSnapshot(withInvalid);
      expect(await store.getSnapshot("@a:x")).toEqual(withInvalid);
      await store.putSnapshot(snap("@a:x", { invalidDevices: [] }));
      const none = await store.getSnapshot("@a:x");
      expect(none && "invalidDevices" in none).toBe(false);
    });
  });

  describe("backoffs", () => {
    it("puts, overwrites, lists, clears", async () => {
      expect(await store.getBackoff("x")).toBeUndefined();
      await store.putBackoff({ destination: "x", failures: 1, retryAt: 10, lastProbeAt: 5 });
      await store.putBackoff({ destination: "a:8448", failures: 2, retryAt: 20, lastProbeAt: 6 });
      await store.putBackoff({ destination: "x", failures: 3, retryAt: 30, lastProbeAt: 7 });
      expect(await store.getBackoff("x")).toEqual({ destination: "x", failures: 3, retryAt: 30, lastProbeAt: 7 });
      expect((await store.listBackoffs()).map((b) => b.destination)).toEqual(["a:8448", "x"]);
      await store.clearBackoff("x");
      expect(await store.getBackoff("x")).toBeUndefined();
      expect(await store.listBackoffs()).toHaveLength(1);
    });
  });

  describe("retries", () => {
    it("keep the trigger that started the refresh, through upserts", async () => {
      await store.putRetry({ userId: "@t:x", attempts: 1, dueAt: 100, requestedBy: ["admin:@a:h"], trigger: "admin" });
      expect((await store.getRetry("@t:x"))?.trigger).toBe("admin");
      await store.putRetry({ userId: "@t:x", attempts: 2, dueAt: 200, requestedBy: [], trigger: "audit" });
      expect((await store.claimDueRetries(300, 10, "me", 1000)).map((r) => r.trigger)).toEqual(["audit"]);
      await store.putRetry({ userId: "@t:x", attempts: 3, dueAt: 300, requestedBy: [] });
      const r = await store.getRetry("@t:x");
      expect(r && "trigger" in r).toBe(false);
      await store.deleteRetry("@t:x");
    });

    it("upserts by user, keeps or drops lastError, deletes", async () => {
      expect(await store.getRetry("@a:x")).toBeUndefined();
      await store.putRetry({ userId: "@a:x", attempts: 1, dueAt: 100, requestedBy: ["@me:h|D1"], lastError: "502" });
      expect(await store.getRetry("@a:x")).toEqual({
        userId: "@a:x",
        attempts: 1,
        dueAt: 100,
        requestedBy: ["@me:h|D1"],
        lastError: "502",
      });
      await store.putRetry({ userId: "@a:x", attempts: 2, dueAt: 200, requestedBy: ["@me:h|D1", "@you:h|D2"] });
      const r = await store.getRetry("@a:x");
      expect(r).toEqual({ userId: "@a:x", attempts: 2, dueAt: 200, requestedBy: ["@me:h|D1", "@you:h|D2"] });
      expect(r && "lastError" in r).toBe(false);
      expect(await store.listRetries()).toHaveLength(1);
      await store.deleteRetry("@a:x");
      expect(await store.getRetry("@a:x")).toBeUndefined();
      expect(await store.listRetries()).toEqual([]);
    });

    it("returns due entries oldest first, ties in insertion order, limited; nextRetryAt is the minimum", async () => {
      expect(await store.nextRetryAt()).toBeUndefined();
      expect(await store.dueRetries(1e15, 10)).toEqual([]);
      const put = (userId: string, dueAt: number) => store.putRetry({ userId, attempts: 0, dueAt, requestedBy: [] });
      await put("@late:x", 300);
      await put("@z:x", 100);
      await put("@a:x", 100);
      await put("@early:x", 50);
      expect(await store.nextRetryAt()).toBe(50);
      expect((await store.dueRetries(100, 10)).map((r) => r.userId)).toEqual(["@early:x", "@z:x", "@a:x"]);
      expect((await store.dueRetries(100, 2)).map((r) => r.userId)).toEqual(["@early:x", "@z:x"]);
      expect(await store.dueRetries(49, 10)).toEqual([]);
      // Re-scheduling keeps the row identity but moves it in time.
      await put("@early:x", 400);
      expect(await store.nextRetryAt()).toBe(100);
      expect((await store.listRetries()).map((r) => r.userId)).toEqual(["@z:x", "@a:x", "@late:x", "@early:x"]);
    });
  });

  describe("retry claims (leases)", () => {
    const due = (userId: string, dueAt: number) => ({ userId, attempts: 1, dueAt, requestedBy: ["r"] });

    it("claims due entries for a lease: not again until it ends; putRetry and deleteRetry end it", async () => {
      await store.putRetry(due("@a:x", 10));
      await store.putRetry(due("@b:x", 20));
      await store.putRetry(due("@later:x", 5000));
      expect((await store.claimDueRetries(100, 10, "r1", 1000)).map((r) => r.userId)).toEqual(["@a:x", "@b:x"]);
      // Still due, but held: nobody else (nor r1 again) gets them while the lease runs.
      expect(await store.claimDueRetries(100, 10, "r2", 1000)).toEqual([]);
      expect(await store.claimDueRetries(1099, 10, "r2", 1000)).toEqual([]);
      // The loop looks again when the lease ends (or the next entry is due), not at once.
      expect(await store.nextRetryAt()).toBe(1100);
      // A rescheduled entry is nobody's; a finished one is gone.
      await store.putRetry(due("@a:x", 50));
      await store.deleteRetry("@b:x");
      expect(await store.nextRetryAt()).toBe(50);
      expect((await store.claimDueRetries(100, 10, "r2", 1000)).map((r) => r.userId)).toEqual(["@a:x"]);
      expect(await store.dueRetries(100, 10)).toHaveLength(1); // the plain listing ignores leases
      // The holder died: once its lease ends, another takes the entry over.
      expect((await store.claimDueRetries(1100, 10, "r3", 1000)).map((r) => r.userId)).toEqual(["@a:x"]);
      expect(await store.nextRetryAt()).toBe(2100);
    });

    it("claims at most `limit`, earliest first, and two stores on one database claim disjoint entries", async () => {
      for (let i = 0; i < 40; i++) await store.putRetry(due(`@u${String(i).padStart(2, "0")}:x`, i));
      expect((await store.claimDueRetries(1000, 3, "r1", 60_000)).map((r) => r.userId)).toEqual([
        "@u00:x",
        "@u01:x",
        "@u02:x",
      ]);
      const other = await openDatabase(location);
      opened.push(other);
      const [a, b] = await Promise.all([
        store.claimDueRetries(1000, 20, "r1", 60_000),
        other.claimDueRetries(1000, 20, "r2", 60_000),
      ]);
      const all = [...a, ...b].map((r) => r.userId);
      expect(new Set(all).size).toBe(all.length);
      expect(all.sort()).toEqual(Array.from({ length: 37 }, (_, i) => `@u${String(i + 3).padStart(2, "0")}:x`));
    });
  });

  describe("pending deliveries", () => {
    const me = "@me:h";
    const row = (target: string, deviceId = "D1") => ({ userId: me, deviceId, target });

    it("adds idempotently, per device", async () => {
      expect(await store.hasPending(me, "D1")).toBe(false);
      await store.addPending([row("@a:x"), row("@b:y"), row("@a:x", "D2")]);
      await store.addPending([row("@a:x")]);
      expect(await store.countPending()).toBe(3);
      expect(await store.hasPending(me, "D1")).toBe(true);
      expect(await store.hasPending(me, "D3")).toBe(false);
      expect(await store.hasPending("@other:h", "D1")).toBe(false);
      expect(await store.pendingFor(me, "D1")).toEqual([
        { target: "@a:x", carriedIn: [] },
        { target: "@b:y", carriedIn: [] },
      ]);
      expect(await store.pendingFor(me, "D2")).toEqual([{ target: "@a:x", carriedIn: [] }]);
      await store.addPending([]);
      expect(await store.countPending()).toBe(3);
    });

    it("with keep, an existing row stays as it is (its carried tokens too); a missing one is added", async () => {
      await store.openConn(me, "D1", "c", 1);
      await store.addPending([row("@a:x")]);
      await store.markCarried(me, "D1", ["@a:x"], "s1");
      await store.markCarried(me, "D1", ["@a:x"], "s1", "c");
      await store.addPending([row("@a:x"), row("@b:y")], Date.now(), true);
      expect(await store.pendingFor(me, "D1")).toEqual([
        { target: "@a:x", carriedIn: ["s1"] },
        { target: "@b:y", carriedIn: [] },
      ]);
      expect(await store.pendingFor(me, "D1", "c")).toEqual([
        { target: "@a:x", carriedIn: ["s1"] },
        { target: "@b:y", carriedIn: [] },
      ]);
      // Without keep, re-adding resets: a newer change is delivered again.
      await store.addPending([row("@a:x")]);
      expect((await store.pendingFor(me, "D1"))[0]).toEqual({ target: "@a:x", carriedIn: [] });
    });

    it("marks carried tokens on the named rows only, keeps the last 8, moves a repeated token to the end", async () => {
      await store.addPending([row("@a:x"), row("@b:y")]);
      await store.markCarried(me, "D1", ["@a:x", "@gone:z"], "s1");
      expect(await store.pendingFor(me, "D1")).toEqual([
        { target: "@a:x", carriedIn: ["s1"] },
        { target: "@b:y", carriedIn: [] },
      ]);
      expect(await store.countPending()).toBe(2); // markCarried never creates rows
      for (let i = 2; i <= 10; i++) await store.markCarried(me, "D1", ["@a:x"], `s${i}`);
      expect((await store.pendingFor(me, "D1"))[0]?.carriedIn).toEqual([
        "s3",
        "s4",
        "s5",
        "s6",
        "s7",
        "s8",
        "s9",
        "s10",
      ]);
      await store.markCarried(me, "D1", ["@a:x"], "s5");
      expect((await store.pendingFor(me, "D1"))[0]?.carriedIn).toEqual([
        "s3",
        "s4",
        "s6",
        "s7",
        "s8",
        "s9",
        "s10",
        "s5",
      ]);
    });

    it("acks only rows of that device that carried the token", async () => {
      await store.addPending([row("@a:x"), row("@b:y"), row("@c:z"), row("@a:x", "D2")]);
      await store.markCarried(me, "D1", ["@a:x", "@b:y"], "t1");
      await store.markCarried(me, "D1", ["@c:z"], "t2");
      await store.markCarried(me, "D2", ["@a:x"], "t1");
      expect(await store.ackToken(me, "D1", "nope")).toBe(0);
      expect(await store.ackToken(me, "D1", "t1")).toBe(2);
      expect((await store.pendingFor(me, "D1")).map((p) => p.target)).toEqual(["@c:z"]);
      expect(await store.pendingFor(me, "D2")).toHaveLength(1); // same token, other device: untouched
      expect(await store.ackToken(me, "D1", "t2")).toBe(1);
      expect(await store.hasPending(me, "D1")).toBe(false);
      expect(await store.countPending()).toBe(1);
    });

    it("re-adding resets carriedIn, so an older token no longer acknowledges a newer change", async () => {
      await store.addPending([row("@a:x")]);
      await store.markCarried(me, "D1", ["@a:x"], "t1");
      await store.addPending([row("@a:x")]);
      expect(await store.pendingFor(me, "D1")).toEqual([{ target: "@a:x", carriedIn: [] }]);
      expect(await store.ackToken(me, "D1", "t1")).toBe(0);
      expect(await store.hasPending(me, "D1")).toBe(true);
    });
  });

  describe("pending deliveries per sliding-sync connection", () => {
    it("a connection starts with the device's rows, gets later ones too, and acknowledges its own only", async () => {
      await store.addPending([{ userId: "@me:h", deviceId: "D", target: "@a:x" }], 1);
      await store.openConn("@me:h", "D", "encryption", 2);
      await store.openConn("@me:h", "D", "encryption", 3); // seen again: nothing copied twice
      await store.addPending([{ userId: "@me:h", deviceId: "D", target: "@b:x" }], 4);
      expect((await store.pendingFor("@me:h", "D", "encryption")).map((p) => p.target)).toEqual(["@a:x", "@b:x"]);
      expect(await store.hasPending("@me:h", "D", "room-list")).toBe(false); // never opened
      await store.markCarried("@me:h", "D", ["@a:x", "@b:x"], "p1.ours", "encryption");
      expect(await store.ackToken("@me:h", "D", "p1.ours")).toBe(0); // not the device's rows
      expect(await store.ackToken("@me:h", "D", "p1.ours", "encryption")).toBe(2);
      expect(await store.hasPending("@me:h", "D", "encryption")).toBe(false);
      expect((await store.pendingFor("@me:h", "D")).map((p) => p.target)).toEqual(["@a:x", "@b:x"]);
    });

    it("a device keeps its 16 most recently seen connections", async () => {
      await store.addPending([{ userId: "@me:h", deviceId: "D", target: "@a:x" }], 1);
      for (let i = 0; i < 20; i++) await store.openConn("@me:h", "D", `c${i}`, 100 + i);
      expect(await store.hasPending("@me:h", "D", "c3")).toBe(false);
      expect(await store.hasPending("@me:h", "D", "c4")).toBe(true);
      await store.addPending([{ userId: "@me:h", deviceId: "D", target: "@b:x" }], 200);
      expect(await store.pendingFor("@me:h", "D", "c0")).toEqual([]);
      expect((await store.pendingFor("@me:h", "D", "c19")).map((p) => p.target)).toEqual(["@a:x", "@b:x"]);
    });

    it("expiry: idle connections go with their rows; so do the device's old rows, only where it has connections", async () => {
      await store.addPending(
        [
          { userId: "@me:h", deviceId: "D", target: "@a:x" },
          { userId: "@me:h", deviceId: "CLASSIC", target: "@a:x" },
        ],
        1,
      );
      await store.openConn("@me:h", "D", "old", 1);
      await store.openConn("@me:h", "D", "new", 10);
      expect(await store.expireConns(5)).toBe(3); // "old", its row, and D's own row
      expect(await store.hasPending("@me:h", "D", "old")).toBe(false);
      expect(await store.hasPending("@me:h", "D", "new")).toBe(true);
      expect(await store.hasPending("@me:h", "D")).toBe(false);
      expect(await store.hasPending("@me:h", "CLASSIC")).toBe(true); // no connections: /sync acknowledges it
    });
  });

  describe("trackers", () => {
    it("tracks, lists by target and by server name, expires by last_seen", async () => {
      await store.track("@me:h", "D1", ["@a:x.org", "@b:x.org", "@c:x.org:8448", "@d:y.org"], 100);
      await store.track("@you:h", "D9", ["@a:x.org"], 200);
      await store.track("@me:h", "D1", ["@a:x.org"], 300); // refreshes last_seen of one row
      expect(await store.trackersOf("@a:x.org")).toEqual([
        { userId: "@me:h", deviceId: "D1" },
        { userId: "@you:h", deviceId: "D9" },
      ]);
      expect(await store.trackersOf("@nobody:x.org")).toEqual([]);
      expect(await store.trackedUsersOn("x.org")).toEqual(["@a:x.org", "@b:x.org"]);
      expect(await store.trackedUsersOn("x.org:8448")).toEqual(["@c:x.org:8448"]);
      expect(await store.trackedUsersOn("[::1]:8448")).toEqual([]);
      await store.track("@me:h", "D1", ["@e:[::1]:8448"], 300);
      expect(await store.trackedUsersOn("[::1]:8448")).toEqual(["@e:[::1]:8448"]);
      // last_seen < 200 only: the rows seen at 100 that were not refreshed.
      expect(await store.expireTrackers(200)).toBe(3);
      expect(await store.trackedUsersOn("x.org")).toEqual(["@a:x.org"]);
      expect(await store.trackersOf("@a:x.org")).toHaveLength(2);
      expect(await store.expireTrackers(301)).toBe(3);
      expect(await store.trackersOf("@a:x.org")).toEqual([]);
    });
  });
});

describe("opening, migrations, durability", () => {
  it("a store written by schema version 1 keeps its snapshots and gains the column", async () => {
    await store.close();
    const file = join(dir, "v1", STORE_FILE);
    mkdirSync(join(dir, "v1"));
    const raw = await openSqliteDatabase(file);
    raw.exec(MIGRATIONS[0]!);
    raw.exec("PRAGMA user_version = 1");
    raw
      .prepare(
        "INSERT INTO snapshots (user_id, stream_id, devices, master_key, self_signing_key, fetched_at) VALUES (?, ?, ?, NULL, NULL, ?)",
      )
      .run("@old:x", 7, JSON.stringify(snap("@old:x").devices), 1_700_000_000_000);
    raw.close();
    const s = await open(join(dir, "v1"));
    expect(await s.getSnapshot("@old:x")).toEqual(snap("@old:x"));
    await s.putSnapshot(snap("@new:x", { invalidDevices: ["D"] }));
    expect((await s.getSnapshot("@new:x"))?.invalidDevices).toEqual(["D"]);
  });

  it("keeps every kind of row across close and reopen, migrating nothing twice", async () => {
    await store.putSnapshot(snap("@a:x"));
    await store.putBackoff({ destination: "x", failures: 1, retryAt: 2, lastProbeAt: 3 });
    await store.putRetry({ userId: "@a:x", attempts: 1, dueAt: 2, requestedBy: ["r"] });
    await store.addPending([{ userId: "@me:h", deviceId: "D", target: "@a:x" }]);
    await store.markCarried("@me:h", "D", ["@a:x"], "t");
    await store.track("@me:h", "D", ["@a:x"], 5);
    await store.close();
    await store.close(); // idempotent
    await expect(store.listRetries()).rejects.toThrow();
    for (let i = 0; i < 2; i++) {
      const s = await open();
      expect(await s.getSnapshot("@a:x")).toEqual(snap("@a:x"));
      expect((await s.getBackoff("x"))?.failures).toBe(1);
      expect((await s.getRetry("@a:x"))?.requestedBy).toEqual(["r"]);
      expect(await s.pendingFor("@me:h", "D")).toEqual([{ target: "@a:x", carriedIn: ["t"] }]);
      expect(await s.trackersOf("@a:x")).toEqual([{ userId: "@me:h", deviceId: "D" }]);
      await s.close();
    }
    const raw = await openSqliteDatabase(join(dir, STORE_FILE));
    // Each runtime must use its own driver: the shipped Bun binary has no node:sqlite fallback to test.
    const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
    expect(raw.driver).toBe(isBun ? "bun:sqlite" : "node:sqlite");
    expect(schemaVersion(raw)).toBe(SCHEMA_VERSION);
    expect(migrate(raw)).toEqual({ from: SCHEMA_VERSION, to: SCHEMA_VERSION });
    expect(raw.prepare("PRAGMA journal_mode").get()?.["journal_mode"]).toBe("wal");
    raw.close();
  });

  it("a version-1 database keeps its pending rows: delivered and acknowledged as before", async () => {
    const d = join(dir, "..", "v1");
    mkdirSync(d, { recursive: true });
    const raw = await openSqliteDatabase(join(d, STORE_FILE));
    raw.exec(MIGRATIONS[0]!);
    raw.exec("PRAGMA user_version = 1");
    raw
      .prepare("INSERT INTO pending (user_id, device_id, target, carried_in) VALUES (?, ?, ?, ?)")
      .run("@me:h", "D", "@a:x", '["s5"]');
    raw.close();
    const s = await open(d);
    expect(await s.pendingFor("@me:h", "D")).toEqual([{ target: "@a:x", carriedIn: ["s5"] }]);
    // The rows count from the migration: not expired as if they were from 1970.
    expect(await s.expireConns(Date.now() - 60_000)).toBe(0);
    await s.openConn("@me:h", "D", "encryption", Date.now());
    expect(await s.expireConns(Date.now() - 60_000)).toBe(0);
    expect(await s.ackToken("@me:h", "D", "s5")).toBe(1);
  });

  it("a version-6 database's retries are kept, without a trigger (counted as endpoint)", async () => {
    const d = join(dir, "..", "v6");
    mkdirSync(d, { recursive: true });
    const raw = await openSqliteDatabase(join(d, STORE_FILE));
    for (const m of MIGRATIONS.slice(0, 6)) raw.exec(m);
    raw.exec("PRAGMA user_version = 6");
    raw
      .prepare("INSERT INTO retries (user_id, attempts, due_at, requested_by) VALUES (?, 1, 5, ?)")
      .run("@a:x", JSON.stringify(["@me:h|D"]));
    raw.close();
    const s = await open(d);
    expect(await s.getRetry("@a:x")).toEqual({ userId: "@a:x", attempts: 1, dueAt: 5, requestedBy: ["@me:h|D"] });
    expect(triggerOf((await s.getRetry("@a:x"))?.trigger)).toBe("endpoint");
    await s.putRetry({ userId: "@a:x", attempts: 2, dueAt: 6, requestedBy: [], trigger: "to_device" });
    expect(triggerOf((await s.getRetry("@a:x"))?.trigger)).toBe("to_device");
  });

  it("a version-5 database's carried positions become their suffixes of ours, which acknowledge them", async () => {
    const d = join(dir, "..", "v5");
    mkdirSync(d, { recursive: true });
    const raw = await openSqliteDatabase(join(d, STORE_FILE));
    for (const m of MIGRATIONS.slice(0, 5)) raw.exec(m);
    raw.exec("PRAGMA user_version = 5");
    const carried = JSON.stringify(["s1.mrp_aaaaaaaaaaaa", "s_2.long_token.mrp_bbbbbbbbbbbb"]);
    raw
      .prepare("INSERT INTO pending (user_id, device_id, target, carried_in, added_at) VALUES (?, ?, ?, ?, 1)")
      .run("@me:h", "D", "@a:x", carried);
    raw
      .prepare("INSERT INTO pending (user_id, device_id, target, carried_in, added_at) VALUES (?, ?, ?, '[]', 1)")
      .run("@me:h", "D", "@b:x");
    raw
      .prepare("INSERT INTO sliding_pending (user_id, device_id, conn_id, target, carried_in) VALUES (?, ?, ?, ?, ?)")
      .run("@me:h", "D", "c", "@a:x", JSON.stringify(["p9.mrp_cccccccccccc"]));
    raw.close();
    const s = await open(d);
    expect(await s.pendingFor("@me:h", "D")).toEqual([
      { target: "@a:x", carriedIn: [".mrp_aaaaaaaaaaaa", ".mrp_bbbbbbbbbbbb"] },
      { target: "@b:x", carriedIn: [] },
    ]);
    expect(await s.pendingFor("@me:h", "D", "c")).toEqual([{ target: "@a:x", carriedIn: [".mrp_cccccccccccc"] }]);
    expect(await s.ackToken("@me:h", "D", ".mrp_bbbbbbbbbbbb")).toBe(1);
    expect(await s.ackToken("@me:h", "D", ".mrp_cccccccccccc", "c")).toBe(1);
  });

  it("migrates a fresh database from 0 and refuses a newer schema", async () => {
    const file = join(dir, "fresh.sqlite3");
    const raw = await openSqliteDatabase(file);
    expect(migrate(raw)).toEqual({ from: 0, to: SCHEMA_VERSION });
    expect(raw.prepare("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table'").get()?.["n"]).toBe(9);
    raw.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`);
    expect(() => migrate(raw)).toThrow(/newer than this build/);
    raw.close();
    await store.close();
    const main = await openSqliteDatabase(join(dir, STORE_FILE));
    main.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`);
    main.close();
    await expect(openSqliteStore(dir)).rejects.toThrow(/^store: .* newer than this build supports/);
  });

  it("rejects unusable locations with one-line errors", async () => {
    const base = join(dir, "..");
    writeFileSync(join(base, "plain-file"), "x");
    await expect(openSqliteStore(join(base, "plain-file"))).rejects.toThrow(/^store: data dir .* not usable: [^\n]+$/);
    await expect(openSqliteStore(join(base, "plain-file", "sub"))).rejects.toThrow(/^store: data dir [^\n]+$/);
    mkdirSync(join(base, "dirfile", STORE_FILE), { recursive: true });
    await expect(openSqliteStore(join(base, "dirfile"))).rejects.toThrow(/is a directory/);
    await expect(openSqliteStore(join(base, "missing"), { readonly: true })).rejects.toThrow(/^store: /);
  });
});

describe("ping", () => {
  const heartbeat = async () => {
    const raw = await openSqliteDatabase(join(dir, STORE_FILE), { readonly: true });
    const at = raw.prepare("SELECT at FROM heartbeat WHERE id = 1").get()?.["at"];
    raw.close();
    return at;
  };

  it("writes the heartbeat row", async () => {
    const raw = await openSqliteDatabase(join(dir, STORE_FILE));
    raw.exec("UPDATE heartbeat SET at = 1");
    raw.close();
    expect(await heartbeat()).toBe(1);
    await store.ping();
    expect(await heartbeat()).toBeGreaterThan(1);
  });

  it("rejects on a store opened read-only (fails for root too), while reads still work", async () => {
    await store.putSnapshot(snap("@a:x"));
    const ro = await open(dir, { readonly: true });
    expect(await ro.getSnapshot("@a:x")).toEqual(snap("@a:x"));
    await expect(ro.ping()).rejects.toThrow(/readonly|read-only/i);
    await expect(ro.putSnapshot(snap("@b:x"))).rejects.toThrow();
    expect(await store.getSnapshot("@b:x")).toBeUndefined();
  });

  it("rejects while another connection holds the write lock, and recovers after", async () => {
    await store.close();
    const s = await open(dir, { busyTimeoutMs: 20 });
    const other = await openSqliteDatabase(join(dir, STORE_FILE));
    other.exec("BEGIN EXCLUSIVE");
    try {
      await expect(s.ping()).rejects.toThrow(/locked|busy/i);
      await expect(s.addPending([{ userId: "@me:h", deviceId: "D", target: "@a:x" }])).rejects.toThrow(/locked|busy/i);
    } finally {
      other.exec("ROLLBACK");
      other.close();
    }
    await s.ping();
    await s.addPending([{ userId: "@me:h", deviceId: "D", target: "@a:x" }]);
    expect(await s.countPending()).toBe(1);
  });
});
