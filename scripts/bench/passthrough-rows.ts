// The pass-through family's rows (passthrough.ts measures), and the detailed table
// scripts/bench-passthrough.ts prints.
import type { Collections } from "./collections.ts";
import type { PassthroughCase, PassthroughOptions, UpstreamKind } from "./passthrough.ts";
import { nproc } from "./procs.ts";
import { fmt, type Row, times } from "./table.ts";

const UPSTREAM_NAME: Record<UpstreamKind, string> = {
  bun: "Bun upstream",
  nginx: "C upstream (nginx answering from memory)",
};

export function rowsOf(c: PassthroughCase): Row[] {
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
