// Family 1, pass-through: small JSON GETs over 64 keep-alive connections, direct to the fast
// upstream, through nginx, through a bare Bun relay (the runtime's floor), and through the
// proxy; once with the Bun upstream (upstream.ts) and once with a C one (nginx answering from
// memory, static-upstream.ts), which leaves the relays more of the two cores. Rounds alternate the four targets so machine noise (the load generator shares the
// cores) hits each alike; the median round is reported, and the CPU each relay spent per
// request, split into user space and kernel.
import { startProxyChild, BUN, ROOT } from "./binary.ts";
import { childPids, cpuTimes, nproc, startProc } from "./procs.ts";
import { fmt, median, type Row, times } from "./table.ts";
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

const UPSTREAM_NAME: Record<UpstreamKind, string> = {
  bun: "Bun upstream",
  nginx: "C upstream (nginx answering from memory)",
};

function rowsOf(c: PassthroughCase): Row[] {
  const { direct: d, nginx: n, relay: b, proxy: p } = c.results;
  const { nginx: nc, relay: bc, proxy: pc } = c.cpuPerRequest;
  const fam = "1 pass-through";
  const errs = p.errors + n.errors + d.errors + b.errors;
  const us = (x: { user: number; system: number }) => `${fmt(x.user, 1)} + ${fmt(x.system, 1)}`;
  const up = UPSTREAM_NAME[c.upstream];
  const rows: Row[] = [
    {
      family: fam,
      figure: `req/s, small JSON GET, 64 conns, ${up}`,
      value: fmt(p.rps, 0),
      reference: `nginx ${fmt(n.rps, 0)}; direct ${fmt(d.rps, 0)}; bare Bun relay ${fmt(b.rps, 0)}`,
      ratio: times(p.rps, n.rps),
      target: "≥1.0× nginx",
      met: p.rps >= n.rps,
      note: `proxy used ${fmt(c.proxyCores * 100, 0)} % of one core${errs ? `; ${errs} errors` : ""}`,
    },
    {
      family: fam,
      figure: `p50 latency, ms, ${up}`,
      value: fmt(p.p50, 2),
      reference: `nginx ${fmt(n.p50, 2)}; direct ${fmt(d.p50, 2)}; bare Bun relay ${fmt(b.p50, 2)}`,
      ratio: times(p.p50, n.p50),
    },
    {
      family: fam,
      figure: `p99 latency, ms, ${up}`,
      value: fmt(p.p99, 2),
      reference: `nginx ${fmt(n.p99, 2)}; direct ${fmt(d.p99, 2)}; bare Bun relay ${fmt(b.p99, 2)}`,
      ratio: times(p.p99, n.p99),
      target: "≤1.2× nginx",
      met: p.p99 <= 1.2 * n.p99,
    },
  ];
  if (c.upstream === "bun") rows.push(collectionsRow(fam, c.collections));
  rows.push({
    family: fam,
    figure: `CPU per request, µs, user + kernel, ${up}`,
    value: us(pc),
    reference: `nginx ${us(nc)}; bare Bun relay ${us(bc)}`,
    ratio: `${times(pc.user + pc.system, nc.user + nc.system)} nginx's (user ${times(pc.user, nc.user)})`,
    target: "≤ nginx's",
    met: pc.user + pc.system <= nc.user + nc.system,
    note: "the bare relay pipes each connection to its own upstream one: no HTTP, the runtime's floor",
  });
  return rows;
}

function collectionsRow(family: string, k: Collections | undefined): Row {
  const figure =
    "collections under this load (a separate run with JSC's GC log): heap promoted per young collection, kB (median)";
  if (!k) return { family, figure, value: "n/a", note: "no collection found in the GC log" };
  const per100k = (n: number) => fmt((n / k.requests) * 100_000, 1);
  return {
    family,
    figure,
    value: fmt(k.promotedKb, 0),
    reference: `young collections ${per100k(k.young)} per 100k requests, ${fmt(k.youngMs, 1)} ms each (median); full collections ${per100k(k.full)} per 100k requests`,
  };
}

/** The detailed table scripts/bench-passthrough.ts has always printed. */
export function passthroughDetail(cases: PassthroughCase[], o: PassthroughOptions): string {
  const rows: string[] = [];
  for (const c of cases) {
    const { direct: d, nginx: n, proxy: p } = c.results;
    for (const [name, r] of [
      ["direct", d],
      ["nginx", n],
      ["bare Bun relay", c.results.relay],
      ["proxy", p],
    ] as const)
      rows.push(
        `| ${c.name}, ${c.upstream} upstream | ${name} | ${r.rps.toFixed(0)} | ${r.mbps.toFixed(1)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.errors} |`,
      );
    rows.push(
      `| ${c.name}, ${c.upstream} upstream | **proxy/nginx** | **${times(p.rps, n.rps)}** | ${times(p.mbps, n.mbps)} | ${times(p.p50, n.p50)} | ${times(p.p99, n.p99)} | |`,
    );
  }
  return [
    `Pass-through, ${o.rounds} alternating rounds of ${o.seconds}s each (median), wrk -t2, ${nproc()} cores shared with the load generator`,
    "",
    "| case | target | req/s | MB/s | p50 ms | p99 ms | errors |",
    "|---|---|---|---|---|---|---|",
    ...rows,
  ].join("\n");
}
