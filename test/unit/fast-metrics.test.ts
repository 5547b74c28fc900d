// The hot-path metrics (src/observe/fast-metrics.ts) expose exactly what prom-client's own Counter
// and Histogram would for the same events: the oracle is prom-client, in a registry beside it.
import { Counter, Histogram, Registry } from "prom-client";
import { describe, expect, test } from "vitest";
import { FastHistogram, SummedCounter } from "../../src/observe/fast-metrics.ts";

const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

function rng(seed: number) {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

describe("hot-path metrics", () => {
  test("a histogram renders as prom-client's, bounds included, through labels() and observe()", async () => {
    const ours = new Registry(),
      theirs = new Registry();
    const cfg = { name: "t_seconds", help: "h", labelNames: ["route"], buckets: BUCKETS };
    const fast = new FastHistogram({ ...cfg, registers: [ours] });
    const ref = new Histogram({ ...cfg, registers: [theirs] });
    const r = rng(7);
    const routes = ["passthrough", "sync", 'a"quoted\\route'];
    for (let i = 0; i < 5000; i++) {
      const route = routes[i % 3]!;
      // Exact bounds land in their own bucket (le is "less than or equal").
      const v = i % 7 === 0 ? BUCKETS[i % BUCKETS.length]! : r() ** 3 * 80;
      if (i % 2) fast.labels({ route }).observe(v);
      else fast.observe({ route }, v);
      ref.observe({ route }, v);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    fast.reset();
    ref.reset();
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });

  test("a counter's labels() children count locally and reach the scrape, mixed with inc(labels, n)", async () => {
    const ours = new Registry(),
      theirs = new Registry();
    const cfg = { name: "t_total", help: "h", labelNames: ["route", "status"] as const };
    const fast = new SummedCounter({ ...cfg, registers: [ours] });
    const ref = new Counter({ ...cfg, registers: [theirs] });
    const step = (route: string, status: string, n: number) => {
      for (let i = 0; i < n; i++) fast.labels({ route, status }).inc();
      fast.inc({ route, status }, 2);
      ref.inc({ route, status }, n + 2);
    };
    step("passthrough", "200", 10);
    step("sync", "499", 3);
    expect(await ours.metrics()).toBe(await theirs.metrics());
    step("passthrough", "200", 5); // counts after a scrape add to it
    fast.labels("sync", "502").inc(4); // positional label values, as prom-client allows
    ref.inc({ route: "sync", status: "502" }, 4);
    expect(await ours.metrics()).toBe(await theirs.metrics());
    step("sync", "200", 2); // counted, not yet scraped: a reset forgets it too
    fast.reset();
    ref.reset();
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });
});
