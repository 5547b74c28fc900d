// The memory reducer (src/observe/memory-reducer.ts): it collects once RSS has grown past its floor
// and stopped moving while the process is quiet; never while RSS is still climbing, for small
// growth, or under load; and it takes a fall of RSS on its own as the new floor. A process quiet
// for a whole minute is collected once a minute.
import { describe, expect, test } from "vitest";
import { MemoryReducer, startMemoryReducer } from "../../src/observe/memory-reducer.ts";

const MB = 1e6;

/** A reducer over a scripted RSS; a collection drops RSS to `afterCollect`. tick(): a reading 2 s on, idle. */
function scripted(start: number, afterCollect: number) {
  const s = { rss: start, collected: 0, t: 0, cpu: 0 };
  const r = new MemoryReducer({
    now: () => s.t,
    cpuSeconds: () => s.cpu,
    rss: () => s.rss,
    collect: () => {
      s.collected++;
      s.rss = afterCollect;
    },
  });
  const tick = () => ((s.t += 2_000), r.tick());
  return { s, r, tick };
}

describe("memory reducer", () => {
  test("collects once RSS has grown past the threshold and settled, then not again", () => {
    const { s, tick } = scripted(60 * MB, 70 * MB);
    s.rss = 120 * MB; // a burst
    expect(tick()).toBe(false); // still climbing: moved 60 MB since the last reading
    s.rss = 121 * MB;
    expect(tick()).toBe(true); // settled, 61 MB over the floor
    expect(s.collected).toBe(1);
    expect(tick()).toBe(false); // the floor is now 70 MB and RSS sits there
    s.rss = 80 * MB;
    tick();
    expect(tick()).toBe(false); // settled, but only 10 MB over the floor
    expect(s.collected).toBe(1);
  });

  test("never collects while RSS keeps moving, however far it grew", () => {
    const { s, tick } = scripted(60 * MB, 60 * MB);
    for (let i = 1; i <= 10; i++) {
      s.rss = 60 * MB + i * 5 * MB;
      expect(tick()).toBe(false);
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

  test("never collects while the process is busy: the pause would land on requests", () => {
    const { s, r } = scripted(60 * MB, 60 * MB);
    s.rss = 120 * MB;
    r.tick();
    for (let i = 1; i <= 5; i++) {
      s.t += 2_000;
      s.cpu += 0.5; // a quarter of a core over each 2 s reading
      expect(r.tick()).toBe(false);
    }
    s.t += 2_000;
    s.cpu += 0.02; // 1 %: quiet
    expect(r.tick()).toBe(true);
  });

  test("RSS that falls on its own becomes the floor", () => {
    const { s, tick } = scripted(100 * MB, 40 * MB);
    s.rss = 50 * MB; // the runtime collected by itself
    tick();
    s.rss = 67 * MB;
    tick();
    expect(tick()).toBe(true); // 17 MB over the new floor of 50 MB, and settled
  });

  test("a process quiet for a whole minute is collected once a minute, however little RSS grew", () => {
    // The audit at 2/s (docs/performance.md, ninth session): little allocation, and RSS creeping
    // up 1 MB at a time, which one late collection does not give back.
    const { s, r } = scripted(60 * MB, 60 * MB);
    const at: number[] = [];
    for (s.t = 0; s.t < 200_000; s.t += 2_000) {
      s.cpu += 0.02; // 1 % of a core
      s.rss += 0.1 * MB;
      if (r.tick()) at.push(s.t);
    }
    expect(at).toEqual([60_000, 120_000, 180_000]);
  });

  test("no collection a minute on for a process that was busy within that minute", () => {
    const { s, r } = scripted(60 * MB, 60 * MB);
    const at: number[] = [];
    for (s.t = 0; s.t < 200_000; s.t += 2_000) {
      s.cpu += s.t % 40_000 === 0 ? 1 : 0.02; // busy for 2 s every 40 s
      if (r.tick()) at.push(s.t);
    }
    expect(at).toEqual([]);
  });

  test("under Bun it runs on a timer that keeps no process alive; elsewhere V8 has its own", () => {
    const r = startMemoryReducer();
    if (typeof (globalThis as { Bun?: unknown }).Bun === "undefined") return expect(r).toBeUndefined();
    expect(r).toBeInstanceOf(MemoryReducer);
    r!.stop();
  });
});
