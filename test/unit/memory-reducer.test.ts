// The memory reducer (src/ops/memory-reducer.ts): it collects once RSS has grown past its floor
// and stopped moving, never while RSS is still climbing or for small growth, and it takes a
// fall of RSS on its own as the new floor.
import { describe, expect, test } from "vitest";
import { MemoryReducer, startMemoryReducer } from "../../src/ops/memory-reducer.ts";

const MB = 1e6;

/** A reducer over a scripted RSS; a collection drops RSS to `afterCollect`. */
function scripted(start: number, afterCollect: number) {
  const s = { rss: start, collected: 0, t: 0 };
  const r = new MemoryReducer({
    now: () => s.t,
    rss: () => s.rss,
    collect: () => {
      s.collected++;
      s.rss = afterCollect;
    },
  });
  return { s, r };
}

describe("memory reducer", () => {
  test("collects once RSS has grown past the threshold and settled, then not again", () => {
    const { s, r } = scripted(60 * MB, 70 * MB);
    s.rss = 120 * MB; // a burst
    expect(r.tick()).toBe(false); // still climbing: moved 60 MB since the last reading
    s.rss = 121 * MB;
    expect(r.tick()).toBe(true); // settled, 61 MB over the floor
    expect(s.collected).toBe(1);
    expect(r.tick()).toBe(false); // the floor is now 70 MB and RSS sits there
    s.rss = 80 * MB;
    r.tick();
    expect(r.tick()).toBe(false); // settled, but only 10 MB over the floor
    expect(s.collected).toBe(1);
  });

  test("never collects while RSS keeps moving, however far it grew", () => {
    const { s, r } = scripted(60 * MB, 60 * MB);
    for (let i = 1; i <= 10; i++) {
      s.rss = 60 * MB + i * 5 * MB;
      expect(r.tick()).toBe(false);
    }
    expect(s.collected).toBe(0);
  });

  test("at most one collection a minute, however often RSS grows and settles again", () => {
    const { s, r } = scripted(60 * MB, 60 * MB);
    const at: number[] = [];
    for (s.t = 0; s.t < 180_000; s.t += 2_000) {
      if (s.rss === 60 * MB) s.rss = 100 * MB; // steady churn: back up as soon as collected
      if (r.tick()) at.push(s.t);
    }
    expect(at).toEqual([2_000, 62_000, 122_000]);
  });

  test("RSS that falls on its own becomes the floor", () => {
    const { s, r } = scripted(100 * MB, 40 * MB);
    s.rss = 50 * MB; // the runtime collected by itself
    r.tick();
    s.rss = 67 * MB;
    r.tick();
    expect(r.tick()).toBe(true); // 17 MB over the new floor of 50 MB, and settled
  });

  test("under Bun it runs on a timer that keeps no process alive; elsewhere V8 has its own", () => {
    const r = startMemoryReducer();
    if (typeof (globalThis as { Bun?: unknown }).Bun === "undefined") return expect(r).toBeUndefined();
    expect(r).toBeInstanceOf(MemoryReducer);
    r!.stop();
  });
});
