// Trackers written after a fan-out read them (src/delivery/late-trackers.ts): which devices a
// fan-out may have missed, on both orders of hearing (the fan-out first, or the write first), and
// in one process when the write outlasts the fan-out's bounded wait (a real SQLite store).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, test } from "vitest";
import { Delivery } from "../../src/delivery/delivery.ts";
import { CLOCK_SLACK_MS, LateTrackers } from "../../src/delivery/late-trackers.ts";
import { createUpstream } from "../../src/http/upstream.ts";
import { createLogger } from "../../src/observe/log.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";

const dev = { userId: "@me:hs", deviceId: "D1" };

test("a fan-out read between the query and the write's acknowledgement missed the device", () => {
  let now = 1_000;
  const late = new LateTrackers(() => now);
  // Heard first, then the write: the write names the target.
  late.fannedOut("@a:x", 1_050, 0);
  expect(late.written(dev, ["@a:x", "@b:x"], 1_000, 1_100)).toEqual(["@a:x"]);
  // Written first, then heard: the fan-out names the device.
  now = 2_000;
  late.written(dev, ["@c:x"], 2_000, 2_100);
  expect(late.fannedOut("@c:x", 2_050, 0)).toEqual([dev]);
});

test("a read after the acknowledgement saw the row; a read before the query was of what the query got", () => {
  const now = 1_000;
  const late = new LateTrackers(() => now);
  late.written(dev, ["@a:x"], 1_000, 1_100);
  expect(late.fannedOut("@a:x", 1_101, 0)).toEqual([]);
  expect(late.fannedOut("@a:x", 999, 0)).toEqual([]);
  late.fannedOut("@b:x", 1_101, 0);
  late.fannedOut("@b:x", 999, 0);
  expect(late.written(dev, ["@b:x"], 1_000, 1_100)).toEqual([]);
});

test("another replica's clock counts as that much earlier and later", () => {
  const now = 1_000;
  const late = new LateTrackers(() => now);
  late.written(dev, ["@a:x"], 1_000, 1_100);
  expect(late.fannedOut("@a:x", 1_100 + CLOCK_SLACK_MS, CLOCK_SLACK_MS)).toEqual([dev]);
  expect(late.fannedOut("@a:x", 1_000 - CLOCK_SLACK_MS, CLOCK_SLACK_MS)).toEqual([dev]);
  expect(late.fannedOut("@a:x", 1_101 + CLOCK_SLACK_MS, CLOCK_SLACK_MS)).toEqual([]);
});

test("both are forgotten after a while", () => {
  let now = 1_000;
  const late = new LateTrackers(() => now);
  late.written(dev, ["@a:x"], 1_000, 1_100);
  late.fannedOut("@b:x", 1_050, 0);
  now += 60_000;
  expect(late.fannedOut("@a:x", 1_050, 0)).toEqual([]);
  expect(late.written(dev, ["@b:x"], 1_000, 1_100)).toEqual([]);
});

test("one process: a tracker write that outlasts the fan-out's wait is told once it commits", async () => {
  const dir = mkdtempSync(join(tmpdir(), "late-trackers-"));
  const real = await openSqliteStore(dir);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const store = new Proxy(real, {
    get(target, key) {
      if (key === "track")
        return async (...args: Parameters<typeof real.track>) => {
          await gate;
          return real.track(...args);
        };
      const v = Reflect.get(target, key);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  try {
    const d = new Delivery({
      store,
      upstream: createUpstream("http://127.0.0.1:1"),
      log: createLogger("error"),
      trackerTtlMs: 86_400_000,
    });
    d.trackQuery({ ...dev, token: "t" }, ["@a:x"]);
    // The bounded wait (2 s) ends with the write still held: the read finds no tracker.
    await d.onSnapshot({ userId: "@a:x", streamId: 1, devices: {}, fetchedAt: 1 });
    expect(await real.pendingFor(dev.userId, dev.deviceId)).toEqual([]);
    release();
    await d.trackers.idle();
    await expect.poll(() => real.pendingFor(dev.userId, dev.deviceId)).toEqual([{ target: "@a:x", carriedIn: [] }]);
  } finally {
    await real.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
