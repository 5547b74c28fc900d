// Family 2, streaming: a 50 MB /sync-style body through the proxy's /sync route (a known token,
// nothing to inject), against the same body fetched direct and through nginx (unbuffered), all
// alternating; the proxy's peak RSS
// over the transfers, and while a client stalls mid-body (a proxy that buffered would grow by
// ~50 MB; one that streams grows by its garbage only). Then a slow-drip
// body (a first chunk at once, then one per 100 ms for 1 s): when its first byte reaches the client.
import { join } from "node:path";
import { BUN, ROOT, startProxyChild } from "./binary.ts";
import { stalledGet, timedGet, type TimedResponse } from "./client.ts";
import { cpuSeconds, peakRssBytes, resetPeakRss, rssBytes, sampleRss, startProc } from "./procs.ts";
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

    const speed: Record<"direct" | "nginx" | "proxy", number[]> = { direct: [], nginx: [], proxy: [] };
    let minBytes = Infinity, cpu = 0, wall = 0;
    for (let r = 0; r < o.rounds; r++)
      for (let i = 0; i < (o.perRound ?? 3); i++)
        for (const [name, port] of [["direct", upPort], ["nginx", nginx.port], ["proxy", proxy.port]] as const) {
          const cpu0 = cpuSeconds(proxy.pid);
          const t = await get(port, `bench_bytes=${BIG}`);
          if (name === "proxy") (cpu += cpuSeconds(proxy.pid) - cpu0), (wall += t.totalMs / 1000);
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
    const stalledBytes = await stalledGet(proxy.port, `/_matrix/client/v3/sync?since=s1&timeout=0&bench_bytes=${BIG}`, auth, 1 << 20, async () => {
      const s = sampleRss(proxy.pid, 5);
      await new Promise((r) => setTimeout(r, 2000));
      stallPeak = s.stop();
    });
    if (stalledBytes < BIG) throw new Error(`streaming: the stalled 50 MB transfer delivered only ${stalledBytes} bytes`);

    const drip: Record<"direct" | "proxy", TimedResponse[]> = { direct: [], proxy: [] };
    for (let r = 0; r < o.rounds; r++)
      for (const [name, port] of [["direct", upPort], ["proxy", proxy.port]] as const) drip[name].push(await get(port, `bench_drip=${DRIP.chunks},${DRIP.everyMs}`));

    const d = median(speed.direct), p = median(speed.proxy), n = median(speed.nginx);
    const growth = peak - baseline;
    const first = (name: "direct" | "proxy") => median(drip[name].map((x) => x.firstBodyMs));
    const total = median(drip.proxy.map((x) => x.totalMs));
    const fam = "2 streaming";
    return [
      { family: fam, figure: "50 MB /sync body, MB/s", value: fmt(p, 0), reference: `direct ${fmt(d, 0)}; nginx ${fmt(n, 0)} (${times(n, d)} direct)`, ratio: times(p, d), target: "≥0.9× direct", met: p >= 0.9 * d, note: `proxy used ${fmt((cpu / wall) * 100, 0)} % of one core` },
      { family: fam, figure: "proxy RSS growth over the 50 MB transfers", value: mb(growth), reference: `baseline ${mb(baseline)}, peak ${mb(peak)}`, target: "<16 MB", met: growth < 16e6, note: hwmReset ? undefined : "sampled every 5 ms; VmHWM reset refused" },
      { family: fam, figure: "proxy RSS growth while a client stalls a 50 MB body for 2 s (buffering check)", value: mb(stallPeak - beforeStall), reference: `before ${mb(beforeStall)}; a buffering proxy shows ≥50 MB here` },
      { family: fam, figure: `slow-drip body: first body byte, ms (body lasts ${fmt(total, 0)} ms)`, value: fmt(first("proxy"), 1), reference: `direct ${fmt(first("direct"), 1)}`, ratio: `${first("proxy") >= first("direct") ? "+" : "−"}${fmt(Math.abs(first("proxy") - first("direct")), 1)} ms`, target: "immediately (<50 ms)", met: first("proxy") < 50 },
    ];
  } finally {
    await Promise.all([proxy.stop(), nginx.proc.stop(), up.stop()]);
  }
}
