// Family 1, pass-through: small JSON GETs over 64 keep-alive connections, direct to the fast
// upstream, through nginx, through a bare Bun relay (the runtime's floor), and through the
// proxy; once with the Bun upstream (upstream.ts) and once with a C one (nginx answering from
// memory, static-upstream.ts), which leaves the relays more of the two cores. Rounds alternate the four targets so machine noise (the load generator shares the
// cores) hits each alike; the median round is reported, and the CPU each relay spent per
// request, split into user space and kernel.
import { startProxyChild, BUN, ROOT } from "./binary.ts";
import { childPids, cpuTimes, startProc } from "./procs.ts";
import { median, type Row } from "./table.ts";
import { passthroughDetail, rowsOf } from "./passthrough-rows.ts";
import { type Collections, measureCollections } from "./collections.ts";
import { startNginx, waitForHttp, wrk, type WrkResult } from "./wrk.ts";
import { startStaticUpstream } from "./static-upstream.ts";
import { join } from "node:path";

export interface PassthroughOptions {
  seconds: number;
  rounds: number;
  /** Also run the 5 MB streamed-body case of the original scripts/bench-passthrough.ts. */
  bigBody?: boolean;
  /** Which upstreams to measure against (default both, Bun's first). */
  upstreams?: UpstreamKind[];
  /**
   * Front-end threads for the proxy (--front-threads), nginx workers beside it, and wrk
   * threads (default: the proxy's default of 1 thread; nginx one worker per core; wrk 2).
   * scripts/bench-threads.ts sweeps them together on a host with cores to spare.
   */
  threads?: { front: number; nginx: number; wrk: number; conns: number; upstreamWorkers: number | "auto" };
}

/** "bun": scripts/bench/upstream.ts; "nginx": nginx answering from memory (static-upstream.ts). */
export type UpstreamKind = "bun" | "nginx";

type Target = "direct" | "nginx" | "relay" | "proxy";

export interface PassthroughCase {
  name: string;
  upstream: UpstreamKind;
  path: string;
  conns: number;
  /** target name -> the median round */
  results: Record<Target, WrkResult>;
  /** The proxy's CPU over its rounds, in cores (1 = one core busy all the time). */
  proxyCores: number;
  /** CPU per request, µs (median round), user space and kernel, for the relaying processes. */
  cpuPerRequest: Record<"nginx" | "relay" | "proxy", { user: number; system: number }>;
  /** The proxy's collections under the same load (collections.ts); undefined: log unreadable. */
  collections?: Collections;
}

export async function measurePassthrough(o: PassthroughOptions): Promise<PassthroughCase[]> {
  const out: PassthroughCase[] = [];
  for (const kind of o.upstreams ?? ["bun", "nginx"]) out.push(...(await measureWith(kind, o)));
  return out;
}

async function startUpstream(
  kind: UpstreamKind,
  workers: number | "auto" = 1,
): Promise<{ port: number; stop(): Promise<void> }> {
  if (kind === "nginx") {
    const s = await startStaticUpstream("bench.test", workers);
    return { port: s.port, stop: () => s.proc.stop() };
  }
  const up = startProc(BUN, [join(ROOT, "scripts", "bench", "upstream.ts"), "bench.test"]);
  const port = Number((await up.waitLine(/upstream listening (\d+)/))[1]);
  return { port, stop: () => up.stop() };
}

async function measureWith(kind: UpstreamKind, o: PassthroughOptions): Promise<PassthroughCase[]> {
  const up = await startUpstream(kind, o.threads?.upstreamWorkers);
  const wrkThreads = o.threads?.wrk ?? 2;
  const upPort = up.port;
  const upstream = `http://127.0.0.1:${upPort}`;
  const nginx = await startNginx(upPort, { workers: o.threads?.nginx });
  // The floor: a Bun relay that does nothing but move bytes (bare-relay.ts).
  const relay = startProc(BUN, [join(ROOT, "scripts", "bench", "bare-relay.ts"), String(upPort)]);
  const relayPort = Number((await relay.waitLine(/bare relay listening (\d+)/))[1]);
  const proxy = await startProxyChild(upstream, {
    serverName: "bench.test",
    extra: o.threads ? ["--front-threads", String(o.threads.front)] : [],
  });
  try {
    await waitForHttp(`${proxy.url}/_matrix/client/versions`);
    const targets: Record<Target, number> = { direct: upPort, nginx: nginx.port, relay: relayPort, proxy: proxy.port };
    // Whose CPU is counted: nginx's workers, the relay, the proxy (every thread of each).
    const pids: Partial<Record<Target, number[]>> = {
      nginx: childPids(nginx.proc.pid),
      relay: [relay.pid],
      proxy: [proxy.pid],
    };
    const conns = o.threads?.conns ?? 64;
    const cases = [{ name: `small JSON GET, ${conns} conns`, path: "/_matrix/client/v3/pushrules/", conns }];
    if (o.bigBody && kind === "bun")
      cases.push({ name: "5 MB streamed body, 8 conns", path: `/big/${5 * 1024 * 1024}`, conns: 8 });
    const out: PassthroughCase[] = [];
    for (const c of cases) {
      const rounds: Record<string, WrkResult[]> = { direct: [], nginx: [], relay: [], proxy: [] };
      const perReq: Record<string, { user: number; system: number }[]> = { nginx: [], relay: [], proxy: [] };
      // Warm-up (JIT, connection pools), not counted.
      for (const port of Object.values(targets)) wrk(`http://127.0.0.1:${port}${c.path}`, c.conns, 1, wrkThreads);
      let cpu = 0,
        wall = 0;
      for (let r = 0; r < o.rounds; r++)
        for (const [name, port] of Object.entries(targets)) {
          const counted = pids[name as Target] ?? [];
          const before = counted.map(cpuTimes),
            t0 = performance.now();
          const res = wrk(`http://127.0.0.1:${port}${c.path}`, c.conns, o.seconds, wrkThreads);
          const seconds = (performance.now() - t0) / 1000;
          rounds[name]!.push(res);
          if (counted.length === 0) continue;
          const after = counted.map(cpuTimes);
          const used = { user: 0, system: 0 };
          after.forEach(
            (a, i) => ((used.user += a.user - before[i]!.user), (used.system += a.system - before[i]!.system)),
          );
          const requests = res.rps * seconds;
          perReq[name]!.push({ user: (used.user / requests) * 1e6, system: (used.system / requests) * 1e6 });
          if (name === "proxy") (cpu += used.user + used.system), (wall += seconds);
        }
      const agg = (name: string): WrkResult => {
        const rs = rounds[name]!;
        return {
          rps: median(rs.map((r) => r.rps)),
          p50: median(rs.map((r) => r.p50)),
          p99: median(rs.map((r) => r.p99)),
          mbps: median(rs.map((r) => r.mbps)),
          errors: rs.reduce((a, r) => a + r.errors, 0),
        };
      };
      const cpuOf = (name: string) => ({
        user: median(perReq[name]!.map((x) => x.user)),
        system: median(perReq[name]!.map((x) => x.system)),
      });
      out.push({
        ...c,
        upstream: kind,
        results: { direct: agg("direct"), nginx: agg("nginx"), relay: agg("relay"), proxy: agg("proxy") },
        proxyCores: cpu / wall,
        cpuPerRequest: { nginx: cpuOf("nginx"), relay: cpuOf("relay"), proxy: cpuOf("proxy") },
        // Once is enough: the collector's work is the proxy's, whichever upstream answers.
        collections: kind === "bun" ? await measureCollections(upstream, c.path, o.seconds) : undefined,
      });
    }
    return out;
  } finally {
    await Promise.all([proxy.stop(), relay.stop(), nginx.proc.stop(), up.stop()]);
  }
}

export async function runPassthrough(o: PassthroughOptions): Promise<Row[]> {
  return (await measurePassthrough(o)).flatMap(rowsOf);
}

export { passthroughDetail };
