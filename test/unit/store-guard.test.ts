// The store guard (src/store/store-guard.ts): a failing call is rethrown as StoreUnavailable,
// counted and logged once per cool-down; during the cool-down calls are refused without
// touching the database (each could stall the event loop for the busy timeout), except ping,
// which /readyz uses to look; afterwards calls go through again.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, expect, test } from "vitest";
import { createLogger } from "../../src/observe/log.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import { guardStore, storeFallback, StoreUnavailable } from "../../src/store/store-guard.ts";
import type { Store } from "../../src/store/store.ts";

let dir: string;
let real: Store;
beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "guard-"));
  real = await openSqliteStore(dir);
});
afterEach(async () => {
  await real.close();
  rmSync(dir, { recursive: true, force: true });
});

test("fails, refuses during the cool-down (ping excepted), then serves again", async () => {
  let now = 1000;
  let broken = true;
  const calls: string[] = [];
  const lines: string[] = [];
  const errors: string[] = [];
  // The real store, made to fail on demand: one method throws as it is called, the other rejects.
  const flaky = Object.create(Object.getPrototypeOf(real)) as Store;
  (flaky as unknown as Record<string, unknown>).hasPending = (...a: never[]) => {
    calls.push("hasPending");
    if (broken) throw new Error("disk I/O error");
    return (real.hasPending as (...x: never[]) => unknown).apply(real, a);
  };
  (flaky as unknown as Record<string, unknown>).ping = async () => {
    calls.push("ping");
    if (broken) throw new Error("disk I/O error");
    return real.ping();
  };
  const store = guardStore(flaky, {
    log: createLogger("info", (l) => void lines.push(l)),
    onError: (op) => errors.push(op),
    coolDownMs: 1000,
    now: () => now,
  });

  await expect(store.hasPending("@a:x", "D")).rejects.toThrow(StoreUnavailable);
  await expect(store.hasPending("@a:x", "D")).rejects.toThrow(/disk I\/O error/);
  expect(calls).toEqual(["hasPending"]); // the second was refused without a call
  await expect(store.ping()).rejects.toThrow(StoreUnavailable);
  expect(calls).toEqual(["hasPending", "ping"]);
  expect(errors).toEqual(["hasPending", "hasPending", "ping"]);
  expect(lines.filter((l) => l.includes("store failure"))).toHaveLength(1);
  expect(await storeFallback<boolean | string>(() => store.hasPending("@a:x", "D"), "fallback")).toBe("fallback");

  broken = false;
  now += 1000;
  expect(await store.hasPending("@a:x", "D")).toBe(false);
  expect(await storeFallback(() => store.hasPending("@a:x", "D"), true)).toBe(false);
  // Other errors are not the store's: storeFallback lets them through.
  await expect(
    storeFallback(() => {
      throw new TypeError("a bug");
    }, 0),
  ).rejects.toThrow(TypeError);
});

test("a call not settled within the deadline fails as StoreUnavailable, and starts the cool-down", async () => {
  let now = 1000;
  const calls: string[] = [];
  // A networked store that is down or slow: its calls never settle.
  const stuck = Object.create(Object.getPrototypeOf(real)) as Store;
  (stuck as unknown as Record<string, unknown>).hasPending = () => {
    calls.push("hasPending");
    return new Promise(() => {});
  };
  const store = guardStore(stuck, { log: createLogger("error", () => {}), deadlineMs: 50, now: () => now });
  await expect(store.hasPending("@a:x", "D")).rejects.toThrow(/no answer within 50 ms/);
  await expect(store.hasPending("@a:x", "D")).rejects.toThrow(StoreUnavailable);
  expect(calls).toEqual(["hasPending"]);
  now += 1000;
  await expect(store.hasPending("@a:x", "D")).rejects.toThrow(StoreUnavailable);
  expect(calls).toEqual(["hasPending", "hasPending"]);
});

test("the database back: a call made after the failure that succeeds (the readiness ping) ends the cool-down at once", async () => {
  const now = 1000; // the clock stands still: nothing here waits the cool-down out
  let broken = true;
  const flaky = Object.create(Object.getPrototypeOf(real)) as Store;
  (flaky as unknown as Record<string, unknown>).hasPending = async (...a: never[]) => {
    if (broken) throw new Error("connect ECONNREFUSED");
    return (real.hasPending as (...x: never[]) => unknown).apply(real, a);
  };
  (flaky as unknown as Record<string, unknown>).ping = async () => {
    if (broken) throw new Error("connect ECONNREFUSED");
    return real.ping();
  };
  const store = guardStore(flaky, { log: createLogger("error", () => {}), coolDownMs: 1000, now: () => now });
  await expect(store.hasPending("@a:x", "D")).rejects.toThrow(StoreUnavailable);
  broken = false;
  await expect(store.hasPending("@a:x", "D")).rejects.toThrow(StoreUnavailable); // still cooling down
  await store.ping(); // /readyz: the database answers
  expect(await store.hasPending("@a:x", "D")).toBe(false);
});

test("a call made before one that succeeded, failing after it, starts no cool-down", async () => {
  let now = 1000;
  let failLate: (e: Error) => void = () => {};
  const flaky = Object.create(Object.getPrototypeOf(real)) as Store;
  let first = true;
  (flaky as unknown as Record<string, unknown>).hasPending = (...a: never[]) => {
    if (first) {
      // Waiting for a session while the database comes back; its connection fails later.
      first = false;
      return new Promise((_, reject) => (failLate = reject));
    }
    return (real.hasPending as (...x: never[]) => unknown).apply(real, a);
  };
  const store = guardStore(flaky, { log: createLogger("error", () => {}), coolDownMs: 1000, now: () => now });
  const old = store.hasPending("@a:x", "D");
  now += 10;
  expect(await store.hasPending("@a:x", "D")).toBe(false); // made later, answered
  now += 10;
  failLate(new Error("connect ECONNREFUSED"));
  await expect(old).rejects.toThrow(StoreUnavailable);
  expect(await store.hasPending("@a:x", "D")).toBe(false); // no cool-down
});
