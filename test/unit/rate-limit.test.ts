// The in-process token buckets (src/resync/rate-limit.ts): a bucket refilled to its burst is the
// same as none, so it is not kept. The audit takes a target token for every tracked user each
// pass; before, every one of them kept a bucket until 100,000 users had (docs/performance.md,
// ninth session).
import { expect, test } from "vitest";
import { RateLimiter } from "../../src/resync/rate-limit.ts";

test("buckets refilled to their burst are dropped: a walk of 1,000 users at 2/s holds a few seconds' worth", () => {
  let now = 1_000_000;
  // --rate-target-burst 3, --rate-target-per-minute 6: one token back in 10 s.
  const limiter = new RateLimiter({ burst: 3, perSecond: 0.1 }, () => now);
  for (let i = 0; i < 1_000; i++) {
    expect(limiter.take(`@u${i}:remote.test`)).toBe(0);
    now += 500;
  }
  // Refilled 10 s after their take, looked for every 10 s: at most 20 s of takes at 2/s.
  expect(limiter.size).toBeLessThanOrEqual(41);
  expect(limiter.size).toBeGreaterThan(0);
});

test("a bucket still refilling is kept: its limit holds", () => {
  let now = 1_000_000;
  const limiter = new RateLimiter({ burst: 2, perSecond: 0.1 }, () => now);
  expect(limiter.take("@bob:remote.test")).toBe(0);
  expect(limiter.take("@bob:remote.test")).toBe(0);
  // Other keys' takes long enough after to sweep; bob's bucket is empty and refills in 10 s.
  now += 9_000;
  for (let i = 0; i < 5; i++) limiter.take(`@u${i}:remote.test`);
  expect(limiter.take("@bob:remote.test")).toBe(1_000);
  now += 1_000;
  expect(limiter.take("@bob:remote.test")).toBe(0);
  expect(limiter.take("@bob:remote.test")).toBe(10_000);
  // Once full again (20 s on), a sweep drops it, and a fresh one allows the whole burst.
  now += 30_000;
  limiter.take("@carol:remote.test");
  expect(limiter.size).toBe(1);
  expect(limiter.take("@bob:remote.test")).toBe(0);
  expect(limiter.take("@bob:remote.test")).toBe(0);
  expect(limiter.take("@bob:remote.test")).toBeGreaterThan(0);
});
