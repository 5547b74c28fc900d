// Family 7, replicas on PostgreSQL (docs/scaling.md), all in one run:
//  a) pass-through: nginx with the block of docs/scaling.md in front of 2 replicas, against
//     the same nginx block pointed straight at the upstream (nginx alone); wrk, alternating rounds;
//  b) a refresh answered by replica A wakes a long-poll held by replica B: from A's 202, and from
//     sending the refresh, to B's answer, against the same on one replica (A wakes A),
//     alternating (replicas-wake.ts);
//  c) the refresh storm (1,000 concurrent refreshes of 1,000 users on one destination, and of
//     one user) on SQLite (one process) against PostgreSQL (one replica, and two sharing it).
import { join } from "node:path";
import { makeUser } from "../../test/helpers/fake-devices.ts";
import { startPostgres, type TestPostgres } from "../../test/helpers/postgres.ts";
import { startScalingNginx } from "../../test/helpers/scaling-nginx.ts";
import { BUN, type ProxyChild, ROOT, startProxyChild } from "./binary.ts";
import { timedRequest } from "./client.ts";
import { startProc } from "./procs.ts";
import { startWorld, type World } from "./replicas-world.ts";
import { wakes } from "./replicas-wake.ts";
import { failedRow, fmt, median, type Row } from "./table.ts";
import { waitForHttp, wrk, type WrkResult } from "./wrk.ts";

const FAM = "7 replicas";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface ReplicasOptions {
  seconds: number;
  rounds: number;
  wakes: number;
  storm: number;
}

export async function runReplicas(o: ReplicasOptions): Promise<Row[]> {
  const pg = await startPostgres();
  try {
    const through = await passthrough(pg, o).catch((e: unknown) => [failedRow(`${FAM} (pass-through)`, e)]);
    return [...through, ...(await withWorld(pg, o))];
  } finally {
    await pg.close();
  }
}

async function passthrough(pg: TestPostgres, o: ReplicasOptions): Promise<Row[]> {
  const up = startProc(BUN, [join(ROOT, "scripts", "bench", "upstream.ts"), "bench.test"]);
  const upPort = Number((await up.waitLine(/upstream listening (\d+)/))[1]);
  const database = await pg.createDatabase("bench_passthrough");
  const replicas: ProxyChild[] = [];
  const fronts: Awaited<ReturnType<typeof startScalingNginx>>[] = [];
  try {
    for (let i = 0; i < 2; i++)
      replicas.push(
        await startProxyChild(`http://127.0.0.1:${upPort}`, {
          serverName: "bench.test",
          extra: ["--database", database],
        }),
      );
    const opts = { workers: "auto" as const, accessLog: false };
    const viaReplicas = await startScalingNginx(
      replicas.map((r) => r.port),
      upPort,
      opts,
    );
    fronts.push(viaReplicas);
    const alone = await startScalingNginx([upPort], upPort, opts);
    fronts.push(alone);
    const path = "/_matrix/client/v3/pushrules/";
    const targets = { replicas: viaReplicas.port, alone: alone.port };
    for (const port of Object.values(targets)) await waitForHttp(`http://127.0.0.1:${port}${path}`);
    for (const port of Object.values(targets)) wrk(`http://127.0.0.1:${port}${path}`, 64, 1); // warm-up
    const rounds: Record<string, WrkResult[]> = { replicas: [], alone: [] };
    for (let r = 0; r < o.rounds; r++)
      for (const [name, port] of Object.entries(targets))
        rounds[name]!.push(wrk(`http://127.0.0.1:${port}${path}`, 64, o.seconds));
    const med = (name: string, f: (x: WrkResult) => number) => median(rounds[name]!.map(f));
    const errors = [...rounds.replicas!, ...rounds.alone!].reduce((a, x) => a + x.errors, 0);
    return [
      {
        family: FAM,
        figure: `pass-through, small JSON GET, 64 conns: nginx (docs/scaling.md) + 2 replicas on PostgreSQL, req/s (median of ${o.rounds})`,
        value: fmt(
          med("replicas", (x) => x.rps),
          0,
        ),
        reference: `nginx alone ${fmt(
          med("alone", (x) => x.rps),
          0,
        )}`,
        ratio: `${fmt((med("replicas", (x) => x.rps) / med("alone", (x) => x.rps)) * 100, 0)}% of nginx alone`,
        note: `range ${fmt(Math.min(...rounds.replicas!.map((x) => x.rps)), 0)}–${fmt(Math.max(...rounds.replicas!.map((x) => x.rps)), 0)}; ${errors} errors`,
      },
      {
        family: FAM,
        figure: "pass-through latency, ms (median round)",
        value: `p50 ${fmt(
          med("replicas", (x) => x.p50),
          2,
        )} / p99 ${fmt(
          med("replicas", (x) => x.p99),
          2,
        )}`,
        reference: `nginx alone p50 ${fmt(
          med("alone", (x) => x.p50),
          2,
        )} / p99 ${fmt(
          med("alone", (x) => x.p99),
          2,
        )}`,
      },
    ];
  } finally {
    await Promise.all([...fronts.map((f) => f.stop()), ...replicas.map((r) => r.stop()), up.stop()]);
  }
}

async function withWorld(pg: TestPostgres, o: ReplicasOptions): Promise<Row[]> {
  const w = await startWorld();
  try {
    const database = await pg.createDatabase("bench_replicas");
    const [a, b] = [await w.start(["--database", database]), await w.start(["--database", database])];
    // Each part reports on its own: one that fails is a failed row, the others still run.
    const rows = await wakes(w, a!, b!, o.wakes).catch((e: unknown) => [failedRow(`${FAM} (wake)`, e)]);
    const sqlite = await w.start([]);
    const pgOne = await w.start(["--database", await pg.createDatabase("bench_storm_one")]);
    const stormDb = await pg.createDatabase("bench_storm_two");
    const pgTwo = [await w.start(["--database", stormDb]), await w.start(["--database", stormDb])];
    rows.push(
      ...(await storms(
        w,
        { sqlite: [sqlite], "PostgreSQL, 1 replica": [pgOne], "PostgreSQL, 2 replicas": pgTwo },
        o.storm,
      )),
    );
    return rows;
  } finally {
    await w.close();
  }
}

export async function storms(w: World, setups: Record<string, ProxyChild[]>, n: number): Promise<Row[]> {
  const tokens = Array.from({ length: n }, (_, i) => w.login(`storm${i}`));
  const results: Record<string, { many: number; one: number; fetches: number; tally: string }> = {};
  for (const [name, procs] of Object.entries(setups)) {
    const tag = name.replace(/\W+/g, "");
    const refresh = (i: number, target: string, who = tokens) =>
      timedRequest(
        procs[i % procs.length]!.port,
        "POST",
        `/_matrix/client/v3/user/${encodeURIComponent(target)}/devices/refresh`,
        { Authorization: `Bearer ${who[i]}` },
        "{}",
        120_000,
      );
    const targets = Array.from({ length: n }, (_, i) => `@${tag}${i}:${w.remote.serverName}`);
    for (const u of targets) w.remote.setUser(makeUser(u, { devices: 2 }));
    const t0 = performance.now();
    const many = await Promise.all(targets.map((u, i) => refresh(i, u)));
    const manyMs = performance.now() - t0;
    // One user: the remote holds the fetch until every refresh is inside (each lists its
    // requester's devices first), so all of them overlap it; timed from the release.
    const one = `@${tag}popular:${w.remote.serverName}`;
    w.remote.setUser(makeUser(one, { devices: 3 }));
    const listed = () => w.hs.seen.filter((x) => x.target === "/_matrix/client/v3/devices").length;
    const before = listed();
    const hold = w.remote.hold({ userId: one });
    // Requesters of its own, per setup: each lists its devices as it comes in, which is how the
    // held fetch knows that all of them are inside.
    const others = Array.from({ length: n }, (_, i) => w.login(`${tag}one${i}`));
    const pending = Promise.all(others.map((_, i) => refresh(i, one, others)));
    const deadline = Date.now() + 120_000;
    while (listed() < before + n && Date.now() < deadline) await sleep(5);
    await sleep(300);
    const t1 = performance.now();
    hold.release();
    const shared = await pending;
    const oneMs = performance.now() - t1;
    const by = new Map<number, number>();
    for (const r of [...many, ...shared]) by.set(r.status, (by.get(r.status) ?? 0) + 1);
    results[name] = {
      many: manyMs,
      one: oneMs,
      fetches: w.remote.count({ userId: one, endpoint: "devices" }),
      tally: [...by].map(([s, k]) => `${k}×${s}`).join(", "),
    };
    await sleep(500);
  }
  const base = Object.keys(results)[0]!;
  const r0 = results[base!]!;
  return Object.entries(results).map(([name, r]) => ({
    family: FAM,
    figure: `refresh storm on ${name}: ${n} users of one destination at once, s until all answered`,
    value: fmt(r.many / 1000, 2),
    reference:
      name === base
        ? `${n} refreshes of one user: ${fmt(r.one / 1000, 2)} s, ${r.fetches} fetch(es)`
        : `${base} ${fmt(r0.many / 1000, 2)} s`,
    ratio:
      name === base
        ? `answers ${r.tally}`
        : `${(r.many / r0.many).toFixed(2)}×; one user: ${fmt(r.one / 1000, 2)} s, ${r.fetches} fetch(es); answers ${r.tally}`,
  }));
}
