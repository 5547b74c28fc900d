// Family 2, streaming: a 50 MB /sync-style body through the proxy's /sync route (a known token,
// nothing to inject), against the same body fetched direct, through nginx (unbuffered) and
// through a zero-copy relay (splice-relay.ts), all alternating; what each process on each path
// spends per GB, and so the most the cores could move through each; the proxy's peak RSS over
// the transfers, and while a client stalls mid-body (a proxy that buffered would grow by
// ~50 MB; one that streams grows by its garbage only). Then a slow-drip
// body (a first chunk at once, then one per 100 ms for 1 s): when its first byte reaches the client.
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { BUN, ROOT, startProxyChild } from "./binary.ts";
import { stalledGet, timedGet, type TimedResponse } from "./client.ts";
import { childPids, cpuSeconds, peakRssBytes, resetPeakRss, rssBytes, sampleRss, startProc } from "./procs.ts";
import { fmt, mb, median, type Row, times } from "./table.ts";
import { startNginx } from "./wrk.ts";

const BIG = 50 * 1024 * 1024;
const DRIP = { chunks: 10, everyMs: 100 };

export interface StreamingOptions {
  rounds: number;
  /** transfers per target per round */
  perRound?: number;
}

export async function runStreaming(o: StreamingOptions): Promise<Row[]> {
  const up = startProc(BUN, [join(ROOT, "scripts", "bench", "upstream.ts"), "bench.test"]);
  const upPort = Number((await up.waitLine(/upstream listening (\d+)/))[1]);
  const proxy = await startProxyChild(`http://127.0.0.1:${upPort}`, { serverName: "bench.test" });
  const nginx = await startNginx(upPort);
  const splice = startProc(BUN, [join(ROOT, "scripts", "bench", "splice-relay.ts"), String(upPort)]);
  const splicePort = Number((await splice.waitLine(/splice relay listening (\d+)/))[1]);
  const auth = { Authorization: "Bearer streamer" };
  const get = async (port: number, query: string): Promise<TimedResponse> => {
    const r = await timedGet(port, `/_matrix/client/v3/sync?since=s1&timeout=0&${query}`, auth);
    if (r.status !== 200) throw new Error(`streaming: HTTP ${r.status} from port ${port}`);
    return r;
  };
  try {
    // Warm-up: the whoami cache, the upstream pool, the JIT. Then the baseline.
    for (let i = 0; i < 3; i++) await get(proxy.port, "bench_bytes=100000");
    await new Promise((r) => setTimeout(r, 500));
    const baseline = rssBytes(proxy.pid);
    const hwmReset = resetPeakRss(proxy.pid);
    const sampler = sampleRss(proxy.pid, 5);

    // Whose CPU is the relay's: nginx's workers, the proxy, the splice relay (every thread of each).
    const targets = [
      ["direct", upPort, []],
      ["nginx", nginx.port, childPids(nginx.proc.pid)],
      ["proxy", proxy.port, [proxy.pid]],
      ["splice", splicePort, [splice.pid]],
    ] as const;
    const cpuOf = (pids: readonly number[]) => pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
    type Target = (typeof targets)[number][0];
    const speed = { direct: [], nginx: [], proxy: [], splice: [] } as Record<Target, number[]>;
    // CPU seconds per GB moved, for each process on the path: what bounds each target on these cores.
    const cpu = { direct: [0, 0, 0], nginx: [0, 0, 0], proxy: [0, 0, 0], splice: [0, 0, 0] } as Record<
      Target,
      [upstream: number, client: number, relay: number]
    >;
    const gb = { direct: 0, nginx: 0, proxy: 0, splice: 0 } as Record<Target, number>;
    let minBytes = Infinity,
      wall = 0;
    for (let r = 0; r < o.rounds; r++)
      for (let i = 0; i < (o.perRound ?? 3); i++)
        for (const [name, port, relay] of targets) {
          const before = [cpuSeconds(up.pid), process.cpuUsage(), cpuOf(relay)] as const;
          const t = await get(port, `bench_bytes=${BIG}`);
          const client = process.cpuUsage(before[1]);
          const spent = cpu[name];
          spent[0] += cpuSeconds(up.pid) - before[0];
          spent[1] += (client.user + client.system) / 1e6;
          spent[2] += cpuOf(relay) - before[2];
          gb[name] += t.bodyBytes / 1e9;
          if (name === "proxy") wall += t.totalMs / 1000;
          minBytes = Math.min(minBytes, t.bodyBytes);
          speed[name].push(t.bodyBytes / 1e6 / (t.totalMs / 1000));
        }
    const sampled = sampler.stop();
    const peak = hwmReset ? Math.max(sampled, peakRssBytes(proxy.pid)) : sampled;
    if (minBytes < BIG) throw new Error(`streaming: a 50 MB transfer delivered only ${minBytes} bytes`);

    // The buffering check: a client that stops reading after 1 MB of a 50 MB body for 2 s.
    await new Promise((r) => setTimeout(r, 500));
    const beforeStall = rssBytes(proxy.pid);
    let stallPeak = beforeStall;
    const stalledBytes = await stalledGet(
      proxy.port,
      `/_matrix/client/v3/sync?since=s1&timeout=0&bench_bytes=${BIG}`,
      auth,
      1 << 20,
      async () => {
        const s = sampleRss(proxy.pid, 5);
        await new Promise((r) => setTimeout(r, 2000));
        stallPeak = s.stop();
      },
    );
    if (stalledBytes < BIG)
      throw new Error(`streaming: the stalled 50 MB transfer delivered only ${stalledBytes} bytes`);

    const drip: Record<"direct" | "proxy", TimedResponse[]> = { direct: [], proxy: [] };
    for (let r = 0; r < o.rounds; r++)
      for (const [name, port] of [
        ["direct", upPort],
        ["proxy", proxy.port],
      ] as const)
        drip[name].push(await get(port, `bench_drip=${DRIP.chunks},${DRIP.everyMs}`));

    const d = median(speed.direct),
      p = median(speed.proxy),
      n = median(speed.nginx),
      z = median(speed.splice);
    const perGb = (name: Target) => cpu[name].map((c) => c / gb[name]) as [number, number, number];
    // If every process kept the cores busy every instant: the most a path could move, MB/s.
    const cores = availableParallelism();
    const ceiling = (name: Target) => (cores / perGb(name).reduce((a, b) => a + b)) * 1000;
    const spent = (name: Target) =>
      perGb(name)
        .map((c) => fmt(c, 2))
        .join(" + ");
    const growth = peak - baseline;
    const first = (name: "direct" | "proxy") => median(drip[name].map((x) => x.firstBodyMs));
    const total = median(drip.proxy.map((x) => x.totalMs));
    const fam = "2 streaming";
    return [
      {
        family: fam,
        figure: "50 MB /sync body, MB/s",
        value: fmt(p, 0),
        reference: `direct ${fmt(d, 0)}; nginx ${fmt(n, 0)} (${times(n, d)} direct)`,
        ratio: times(p, d),
        target: "≥0.9× direct",
        met: p >= 0.9 * d,
        note: `proxy used ${fmt((cpu.proxy[2] / wall) * 100, 0)} % of one core`,
      },
      {
        family: fam,
        figure:
          "50 MB /sync body through a zero-copy relay (splice(2), no HTTP: the most a relay process can do here), MB/s",
        value: fmt(z, 0),
        reference: `direct ${fmt(d, 0)}`,
        ratio: times(z, d),
      },
      {
        family: fam,
        figure: "CPU per GB moved, s: upstream + client + relay",
        value: `proxy: ${spent("proxy")}`,
        reference: `direct: ${spent("direct")}; splice relay: ${spent("splice")}; nginx: ${spent("nginx")}`,
      },
      {
        family: fam,
        figure: `the most ${cores} cores could move at those costs, MB/s (if all three processes kept them busy every instant)`,
        value: `proxy ${fmt(ceiling("proxy"), 0)} (${times(ceiling("proxy"), d)} direct)`,
        reference: `splice relay ${fmt(ceiling("splice"), 0)} (${times(ceiling("splice"), d)} direct); direct used ${fmt((d / 1000) * perGb("direct").reduce((a, b) => a + b), 2)} cores`,
      },
      {
        family: fam,
        figure: "proxy RSS growth over the 50 MB transfers",
        value: mb(growth),
        reference: `baseline ${mb(baseline)}, peak ${mb(peak)}`,
        target: "<16 MB",
        met: growth < 16e6,
        note: hwmReset ? undefined : "sampled every 5 ms; VmHWM reset refused",
      },
      {
        family: fam,
        figure: "proxy RSS growth while a client stalls a 50 MB body for 2 s (buffering check)",
        value: mb(stallPeak - beforeStall),
        reference: `before ${mb(beforeStall)}; a buffering proxy shows ≥50 MB here`,
      },
      {
        family: fam,
        figure: `slow-drip body: first body byte, ms (body lasts ${fmt(total, 0)} ms)`,
        value: fmt(first("proxy"), 1),
        reference: `direct ${fmt(first("direct"), 1)}`,
        ratio: `${first("proxy") >= first("direct") ? "+" : "−"}${fmt(Math.abs(first("proxy") - first("direct")), 1)} ms`,
        target: "immediately (<50 ms)",
        met: first("proxy") < 50,
      },
    ];
  } finally {
    await Promise.all([proxy.stop(), nginx.proc.stop(), splice.stop(), up.stop()]);
  }
}
