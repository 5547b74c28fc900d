// The operator's dashboard (docs/grafana/matrix-resync-proxy.json) and alert rules
// (docs/grafana/alerts.yml): well-formed, and every metric they query is one the proxy exports.
import { readFileSync } from "node:fs";
import { Registry } from "prom-client";
import { describe, expect, test } from "vitest";
import { parse as parseYaml } from "yaml";
import { createMetrics } from "../../src/observe/metrics.ts";

const dashboard = JSON.parse(
  readFileSync(new URL("../../docs/grafana/matrix-resync-proxy.json", import.meta.url), "utf8"),
) as {
  uid: string;
  title: string;
  templating: { list: { name: string }[] };
  panels: {
    id: number;
    type: string;
    title: string;
    gridPos: { x: number; y: number; w: number; h: number };
    targets: { refId: string; expr: string }[];
  }[];
};
const rules = parseYaml(readFileSync(new URL("../../docs/grafana/alerts.yml", import.meta.url), "utf8")) as {
  groups: {
    name: string;
    rules: {
      alert: string;
      expr: string;
      for: string;
      labels: { severity: string };
      annotations: { summary: string };
    }[];
  }[];
};

async function exported(): Promise<Set<string>> {
  const m = createMetrics(new Registry());
  return new Set((await m.registry.getMetricsAsJSON()).map((x) => x.name));
}

/** The resync_* metric names an expression reads (a histogram's _bucket/_sum/_count as its own). */
function metricsIn(expr: string): string[] {
  return [...expr.matchAll(/\bresync_[a-z_]+\b/g)].map((x) => x[0].replace(/_(bucket|sum|count)$/, ""));
}

function balanced(expr: string): boolean {
  let depth = 0;
  for (const c of expr) {
    if ("({[".includes(c)) depth++;
    else if (")}]".includes(c) && --depth < 0) return false;
  }
  return depth === 0;
}

describe("Grafana dashboard", () => {
  test("panels have unique ids, a place on the grid, and queries only of exported metrics", async () => {
    const names = await exported();
    expect(dashboard.uid).toMatch(/^[a-z0-9-]{1,40}$/);
    expect(new Set(dashboard.panels.map((p) => p.id)).size).toBe(dashboard.panels.length);
    expect(dashboard.templating.list.map((v) => v.name)).toEqual(expect.arrayContaining(["datasource", "job"]));
    for (const p of dashboard.panels) {
      expect(p.gridPos.w).toBeGreaterThan(0);
      expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
      expect(p.targets.length).toBeGreaterThan(0);
      for (const t of p.targets) {
        expect(balanced(t.expr), t.expr).toBe(true);
        const used = metricsIn(t.expr);
        expect(used.length, t.expr).toBeGreaterThan(0);
        for (const u of used) expect(names.has(u), `${p.title}: ${u}`).toBe(true);
      }
    }
  });

  test("it shows what the issue asks an operator to see", () => {
    const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr)).join("\n");
    for (const m of [
      "resync_heals_total",
      "resync_suspicions_total",
      "resync_audit_behind_seconds",
      "resync_federation_failures_total",
      "resync_retry_queue_depth",
    ])
      expect(exprs).toContain(m);
  });
});

describe("Prometheus alert rules", () => {
  test("each rule is complete and queries only exported metrics", async () => {
    const names = await exported();
    const all = rules.groups.flatMap((g) => g.rules);
    expect(all.length).toBeGreaterThan(0);
    expect(new Set(all.map((r) => r.alert)).size).toBe(all.length);
    for (const r of all) {
      expect(r.alert).toMatch(/^[A-Za-z][A-Za-z0-9]*$/);
      expect(r.for).toMatch(/^\d+[smh]$/);
      expect(["info", "warning", "critical"]).toContain(r.labels.severity);
      expect(r.annotations.summary.length).toBeGreaterThan(0);
      expect(balanced(r.expr), r.expr).toBe(true);
      for (const u of metricsIn(r.expr)) expect(names.has(u), `${r.alert}: ${u}`).toBe(true);
    }
  });
});
