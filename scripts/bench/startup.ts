// Family 6, start-up: from spawning the compiled binary (fresh data directory, so the SQLite
// schema is created) to its first answered request (GET /_matrix/client/versions, which it
// answers itself after asking the upstream), and the binary's size. Reference: the same
// source run uncompiled with `bun src/main.ts`, alternating.
import { join } from "node:path";
import { BUN, benchTmp, binary, ROOT, tempDir, writeKeyFile } from "./binary.ts";
import { timedGet } from "./client.ts";
import { rssBytes, startProc } from "./procs.ts";
import { fmt, mb, median, type Row } from "./table.ts";
import { freePort } from "./wrk.ts";

async function firstAnswer(cmd: string, args: string[], upstream: string): Promise<{ ms: number; rss: number }> {
  const port = await freePort();
  const started = performance.now();
  const proc = startProc(cmd, [
    ...args,
    "--upstream",
    upstream,
    "--server-name",
    "bench.test",
    "--signing-key",
    writeKeyFile(),
    "--listen",
    `127.0.0.1:${port}`,
    "--data-dir",
    tempDir(benchTmp(), "data-"),
    "--log-level",
    "warn",
  ]);
  try {
    for (;;) {
      try {
        const r = await timedGet(port, "/_matrix/client/versions", {}, 5000);
        if (r.status !== 200) throw new Error(`start-up: /versions answered ${r.status}`);
        return { ms: performance.now() - started, rss: rssBytes(proc.pid) };
      } catch (e) {
        if (!String(e).includes("ECONNREFUSED")) throw e;
        if (performance.now() - started > 20_000)
          throw new Error(`start-up: no answer within 20 s; ${proc.tail.slice(-5).join(" ")}`);
        await new Promise((r) => setTimeout(r, 2));
      }
    }
  } finally {
    await proc.stop();
  }
}

export async function runStartup(rounds: number): Promise<Row[]> {
  const bin = binary();
  const up = startProc(BUN, [join(ROOT, "scripts", "bench", "upstream.ts"), "bench.test"]);
  const upstream = `http://127.0.0.1:${(await up.waitLine(/upstream listening (\d+)/))[1]}`;
  try {
    const compiled: number[] = [],
      source: number[] = [],
      rss: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const c = await firstAnswer(bin.path, [], upstream);
      compiled.push(c.ms);
      rss.push(c.rss);
      if (bin.srcRoot) source.push((await firstAnswer(BUN, [join(bin.srcRoot, "src", "main.ts")], upstream)).ms);
    }
    const fam = "6 start-up";
    return [
      {
        family: fam,
        figure: `spawn → first answered request, ms (median of ${rounds})`,
        value: fmt(median(compiled), 0),
        reference: source.length ? `bun src/main.ts ${fmt(median(source), 0)}` : undefined,
        ratio: source.length ? `${(median(compiled) / median(source)).toFixed(2)}×` : undefined,
        note: `RSS then ${mb(median(rss))}`,
      },
      {
        family: fam,
        figure: "binary size",
        value: mb(bin.sizeBytes),
        reference: bin.buildMs === undefined ? undefined : `built in ${fmt(bin.buildMs / 1000, 1)} s`,
        note: "bun build --compile: the Bun runtime is most of it",
      },
    ];
  } finally {
    await up.stop();
  }
}
