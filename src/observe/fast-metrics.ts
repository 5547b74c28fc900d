// The two metrics every relayed request moves. prom-client validates and hashes the label
// object on each inc() and observe(), and files a histogram bucket under a float turned string:
// on the pass-through path that was a fifth of the proxy's CPU per request
// (docs/performance.md). Here a label set's state is a plain object, reached once through
// `labels()`, and the exposition is prom-client's own, byte for byte.
import { Counter, type Registry } from "prom-client";

type Labels = Record<string, string>;

const keyOf = (names: readonly string[], l: Labels) => names.map((n) => l[n] ?? "").join("\u0000");

/**
 * A counter whose `labels(...)` children count in a plain field; the counts reach prom-client's
 * counter when it is read (a scrape), so everything else about it is prom-client's.
 */
export class SummedCounter<T extends string> extends Counter<T> {
  readonly #pending = new Map<string, { labels: Labels; n: number; inc(by?: number): void }>();
  readonly #names: readonly T[];

  constructor(config: { name: string; help: string; labelNames: readonly T[]; registers: Registry[] }) {
    super(config);
    this.#names = config.labelNames;
  }

  override labels(...args: unknown[]): Counter.Internal {
    const l = (
      args.length === 1 && typeof args[0] === "object"
        ? args[0]
        : Object.fromEntries(this.#names.map((n, i) => [n, String(args[i])]))
    ) as Labels;
    const key = keyOf(this.#names, l);
    let child = this.#pending.get(key);
    if (!child) {
      const c = { labels: { ...l }, n: 0, inc: (by = 1) => void (c.n += by) };
      this.#pending.set(key, (child = c));
    }
    return child as unknown as Counter.Internal;
  }

  override reset(): void {
    // prom-client's constructor resets too, before this class's fields exist.
    if (#pending in this) for (const c of this.#pending.values()) c.n = 0;
    super.reset();
  }

  override async get() {
    for (const c of this.#pending.values()) {
      if (c.n === 0) continue;
      this.inc(c.labels as Partial<Record<T, string>>, c.n);
      c.n = 0;
    }
    return super.get();
  }
}

interface Series {
  labels: Labels;
  /** Observations per bucket (not cumulative); the last one is +Inf. */
  counts: Float64Array;
  sum: number;
  count: number;
  observe(v: number): void;
}

/** A histogram with prom-client's exposition; `labels(...)` children observe into plain arrays. */
export class FastHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = "histogram";
  readonly aggregator = "sum";
  readonly #names: readonly string[];
  readonly #bounds: Float64Array;
  readonly #series = new Map<string, Series>();

  constructor(config: {
    name: string;
    help: string;
    labelNames: readonly string[];
    buckets: number[];
    registers: Registry[];
  }) {
    this.name = config.name;
    this.help = config.help;
    this.#names = config.labelNames;
    this.#bounds = Float64Array.from(config.buckets);
    // prom-client's Registry reads a metric through name, help, type and get().
    for (const r of config.registers) r.registerMetric(this as never);
  }

  labels(l: Labels): { observe(v: number): void } {
    const key = keyOf(this.#names, l);
    let s = this.#series.get(key);
    if (!s) {
      const bounds = this.#bounds;
      const series: Series = {
        labels: { ...l },
        counts: new Float64Array(bounds.length + 1),
        sum: 0,
        count: 0,
        observe(v) {
          if (!Number.isFinite(v)) return;
          let i = 0;
          while (i < bounds.length && v > bounds[i]!) i++;
          series.counts[i]!++;
          series.sum += v;
          series.count++;
        },
      };
      this.#series.set(key, (s = series));
    }
    return s;
  }

  observe(l: Labels, v: number): void {
    this.labels(l).observe(v);
  }

  reset(): void {
    this.#series.clear();
  }

  async get() {
    const bucket = `${this.name}_bucket`;
    const values: {
      labels: Record<string, string | number>;
      sharedLabels: Labels;
      value: number;
      metricName: string;
    }[] = [];
    for (const s of this.#series.values()) {
      let acc = 0;
      this.#bounds.forEach((le, i) =>
        values.push({ labels: { le }, sharedLabels: s.labels, value: (acc += s.counts[i]!), metricName: bucket }),
      );
      values.push(
        { labels: { le: "+Inf" }, sharedLabels: s.labels, value: s.count, metricName: bucket },
        { labels: {}, sharedLabels: s.labels, value: s.sum, metricName: `${this.name}_sum` },
        { labels: {}, sharedLabels: s.labels, value: s.count, metricName: `${this.name}_count` },
      );
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}
