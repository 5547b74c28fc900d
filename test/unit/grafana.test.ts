// The operator's dashboard (docs/grafana/matrix-resync-proxy.json) and alert rules
// (docs/grafana/alerts.yml): well-formed, and every metric they query is one the proxy exports.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { describe, expect, test } from "vitest";
import { parse as parseYaml } from "yaml";
import { createMetrics } from "../../src/observe/metrics.ts";
import { TRIGGERS } from "../../src/resync/resync-types.ts";

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

// promtool (Prometheus's own checker; .ci/run installs Debian's prometheus package for it) parses
// every expression as Prometheus will: the alert rules as they are, and the dashboard's queries
// as recording rules, with Grafana's $job variable filled in.
const RULES_FILE = new URL("../../docs/grafana/alerts.yml", import.meta.url).pathname;
function promtool(file: string): { status: number | null; out: string } {
  const r = spawnSync("promtool", ["check", "rules", file], { encoding: "utf8" });
  if (r.error) throw new Error(`promtool is needed (apt-get install prometheus; see .ci/run): ${r.error.message}`);
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe("promtool", () => {
  test("accepts the alert rules", () => {
    const r = promtool(RULES_FILE);
    expect(r.status, r.out).toBe(0);
  });

  test("accepts every dashboard query, and rejects a broken one (so the check has teeth)", () => {
    const dir = mkdtempSync(join(tmpdir(), "promtool-"));
    try {
      const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr.replaceAll("$job", ".*")));
      const file = (list: string[]) => {
        const f = join(dir, `r${Math.random().toString(36).slice(2)}.yml`);
        const rules = list.map((e, i) => `      - record: dashboard:q${i}\n        expr: ${JSON.stringify(e)}`);
        writeFileSync(f, `groups:\n  - name: dashboard\n    rules:\n${rules.join("\n")}\n`);
        return f;
      };
      const ok = promtool(file(exprs));
      expect(ok.status, ok.out).toBe(0);
      expect(ok.out).toContain(`${exprs.length} rules found`);
      expect(promtool(file(["sum by (signal (rate(resync_suspicions_total[5m]))"])).status).not.toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the labels the issue asks to see", () => {
  const panel = (title: RegExp) => dashboard.panels.find((p) => title.test(p.title))!.targets.map((t) => t.expr);
  const rule = (metric: string) => rules.groups.flatMap((g) => g.rules).find((r) => r.expr.includes(metric))!.expr;

  test("heals by trigger, suspicions by signal, federation failures by destination", () => {
    expect(panel(/^Heals/)).toEqual([expect.stringMatching(/sum by \(trigger\)/)]);
    expect(panel(/^Suspicions/)).toEqual([expect.stringMatching(/sum by \(signal\)/)]);
    expect(panel(/^Federation failures/)).toEqual([expect.stringMatching(/sum by \(destination\)/)]);
    expect(rule("resync_suspicions_total")).toMatch(/by \([^)]*\bsignal\b[^)]*\)/);
    expect(rule("resync_federation_failures_total")).toMatch(/by \([^)]*\bdestination\b[^)]*\)/);
  });

  test("the trigger values documented are exactly the five the proxy uses", () => {
    expect([...TRIGGERS].sort()).toEqual(["admin", "audit", "endpoint", "keys_query", "to_device"]);
    const ops = readFileSync(new URL("../../docs/operations.md", import.meta.url), "utf8");
    const row = ops.split("\n").find((l) => l.startsWith("| `resync_heals_total`"))!;
    const listed = [...row.match(/`trigger` \(([^)]*)\)/)![1]!.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]);
    expect(listed).toEqual([...TRIGGERS]);
    const heals = dashboard.panels.find((p) => /^Heals/.test(p.title)) as unknown as { description: string };
    for (const t of TRIGGERS) expect(heals.description).toContain(t);
    expect(heals.description).not.toMatch(/\b(retry|recheck)\b,/);
  });
});
