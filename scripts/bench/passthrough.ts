// Family 1, pass-through: small JSON GETs over 64 keep-alive connections, direct to the fast
// upstream, through nginx, and through the proxy. Rounds alternate the three targets so machine
// noise (the load generator shares the cores) hits each alike; the median round is reported.
import { startProxyChild, BUN, ROOT } from "./binary.ts";
import { cpuSeconds, nproc, startProc } from "./procs.ts";
import { fmt, median, type Row, times } from "./table.ts";
import { startNginx, waitForHttp, wrk, type WrkResult } from "./wrk.ts";
import { join } from "node:path";

export interface PassthroughOptions {
  seconds: number;
  rounds: number;
  /** Also run the 5 MB streamed-body case of the original scripts/bench-passthrough.ts. */
  bigBody?: boolean;
}

export interface PassthroughCase {
  name: string;
  path: string;
  conns: number;
  /** target name -> the median round */
  results: Record<"direct" | "nginx" | "proxy", WrkResult>;
  /** The proxy's CPU over its rounds, in cores (1 = one core busy all the time). */
  proxyCores: number;
}

export async function measurePassthrough(o: PassthroughOptions): Promise<PassthroughCase[]> {
  const up = startProc(BUN, [join(ROOT, "scripts", "bench", "upstream.ts"), "bench.test"]);
  const upPort = Number((await up.waitLine(/upstream listening (\d+)/))[1]);
  const upstream = `http://127.0.0.1:${upPort}`;
  const nginx = await startNginx(upPort);
  const proxy = await startProxyChild(upstream, { serverName: "bench.test" });
  try {
    await waitForHttp(`${proxy.url}/_matrix/client/versions`);
    const targets = { direct: upPort, nginx: nginx.port, proxy: proxy.port } as const;
    const cases = [{ name: "small JSON GET, 64 conns", path: "/_matrix/client/v3/pushrules/", conns: 64 }];
    if (o.bigBody) cases.push({ name: "5 MB streamed body, 8 conns", path: `/big/${5 * 1024 * 1024}`, conns: 8 });
    const out: PassthroughCase[] = [];
    for (const c of cases) {
      const rounds: Record<string, WrkResult[]> = { direct: [], nginx: [], proxy: [] };
      // Warm-up (JIT, connection pools), not counted.
      for (const port of Object.values(targets)) wrk(`http://127.0.0.1:${port}${c.path}`, c.conns, 1);
      let cpu = 0, wall = 0;
      for (let r = 0; r < o.rounds; r++)
        for (const [name, port] of Object.entries(targets)) {
          const cpu0 = cpuSeconds(proxy.pid), t0 = performance.now();
          rounds[name]!.push(wrk(`http://127.0.0.1:${port}${c.path}`, c.conns, o.seconds));
          if (name === "proxy") (cpu += cpuSeconds(proxy.pid) - cpu0), (wall += (performance.now() - t0) / 1000);
        }
      const agg = (name: string): WrkResult => {
        const rs = rounds[name]!;
        return {
          rps: median(rs.map((r) => r.rps)), p50: median(rs.map((r) => r.p50)), p99: median(rs.map((r) => r.p99)),
          mbps: median(rs.map((r) => r.mbps)), errors: rs.reduce((a, r) => a + r.errors, 0),
        };
      };
      out.push({ ...c, results: { direct: agg("direct"), nginx: agg("nginx"), proxy: agg("proxy") }, proxyCores: cpu / wall });
    }
    return out;
  } finally {
    await Promise.all([proxy.stop(), nginx.proc.stop(), up.stop()]);
  }
}

export async function runPassthrough(o: PassthroughOptions): Promise<Row[]> {
  const [c] = await measurePassthrough(o);
  const { direct: d, nginx: n, proxy: p } = c!.results;
  const fam = "1 pass-through";
  const errs = p.errors + n.errors + d.errors;
  return [
    { family: fam, figure: "req/s, small JSON GET, 64 conns", value: fmt(p.rps, 0), reference: `nginx ${fmt(n.rps, 0)}; direct ${fmt(d.rps, 0)}`, ratio: times(p.rps, n.rps), target: "≥1.0× nginx", met: p.rps >= n.rps, note: `proxy used ${fmt(c!.proxyCores * 100, 0)} % of one core${errs ? `; ${errs} errors` : ""}` },
    { family: fam, figure: "p50 latency, ms", value: fmt(p.p50, 2), reference: `nginx ${fmt(n.p50, 2)}; direct ${fmt(d.p50, 2)}`, ratio: times(p.p50, n.p50) },
    { family: fam, figure: "p99 latency, ms", value: fmt(p.p99, 2), reference: `nginx ${fmt(n.p99, 2)}; direct ${fmt(d.p99, 2)}`, ratio: times(p.p99, n.p99), target: "≤1.2× nginx", met: p.p99 <= 1.2 * n.p99 },
  ];
}

/** The detailed table scripts/bench-passthrough.ts has always printed. */
export function passthroughDetail(cases: PassthroughCase[], o: PassthroughOptions): string {
  const rows: string[] = [];
  for (const c of cases) {
    const { direct: d, nginx: n, proxy: p } = c.results;
    for (const [name, r] of [["direct", d], ["nginx", n], ["proxy", p]] as const)
      rows.push(`| ${c.name} | ${name} | ${r.rps.toFixed(0)} | ${r.mbps.toFixed(1)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.errors} |`);
    rows.push(`| ${c.name} | **proxy/nginx** | **${times(p.rps, n.rps)}** | ${times(p.mbps, n.mbps)} | ${times(p.p50, n.p50)} | ${times(p.p99, n.p99)} | |`);
  }
  return [
    `Pass-through, ${o.rounds} alternating rounds of ${o.seconds}s each (median), wrk -t2, ${nproc()} cores shared with the load generator`,
    "",
    "| case | target | req/s | MB/s | p50 ms | p99 ms | errors |",
    "|---|---|---|---|---|---|---|",
    ...rows,
  ].join("\n");
}
