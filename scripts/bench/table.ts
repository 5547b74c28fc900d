// The one table every benchmark family reports into, and the small statistics they share.

export interface Row {
  /** "1 pass-through", "2 streaming", … */
  family: string;
  figure: string;
  /** The proxy's figure, formatted. */
  value: string;
  /** The reference measured side by side ("nginx 15200"), if any. */
  reference?: string;
  /** value ÷ reference, or the difference, formatted. */
  ratio?: string;
  target?: string;
  /** undefined: no target for this figure. */
  met?: boolean;
  note?: string;
}

export function median(xs: readonly number[]): number {
  return percentile(xs, 50);
}

/** Nearest-rank percentile (p in 0..100) of a non-empty list; NaN for an empty one. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * s.length));
  return s[Math.min(rank, s.length) - 1]!;
}

export const fmt = (x: number, digits = 1): string =>
  Number.isFinite(x)
    ? x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })
    : "n/a";

// Decimal megabytes, as the targets are written (150 MB = 150,000,000 bytes).
export const mb = (bytes: number, digits = 1): string => `${fmt(bytes / 1e6, digits)} MB`;

export const times = (a: number, b: number): string =>
  b > 0 && Number.isFinite(a / b) ? `${(a / b).toFixed(2)}×` : "n/a";

export function renderTable(rows: readonly Row[]): string {
  const head = "| # | figure | proxy | reference (same run) | ratio / extra | target | verdict |";
  const lines = [head, "|---|---|---|---|---|---|---|"];
  for (const r of rows) {
    const verdict = r.met === undefined ? "" : r.met ? "met" : "**MISSED**";
    const figure = r.note ? `${r.figure} (${r.note})` : r.figure;
    lines.push(
      `| ${r.family} | ${figure} | ${r.value} | ${r.reference ?? ""} | ${r.ratio ?? ""} | ${r.target ?? ""} | ${verdict} |`,
    );
  }
  return lines.join("\n");
}

/** A row saying a family could not run, so the table always shows every family. */
export function failedRow(family: string, error: unknown): Row {
  const msg = (error instanceof Error ? error.message : String(error)).split("\n")[0]!.slice(0, 160);
  return { family, figure: "did not complete", value: "error", note: msg.replaceAll("|", "/"), met: false };
}
