// Family 3, idle long-polls: 10,000 concurrent /sync long-polls (distinct users and devices)
// held open through the proxy, the homeserver holding each one. Measured: how many reach the
// homeserver, the proxy's RSS, its CPU while they sit idle, and whether a small request still
// gets through. Every process here has its soft open-files limit raised to the hard limit.
import { join } from "node:path";
import { BUN, ROOT, startProxyChild } from "./binary.ts";
import { timedGet } from "./client.ts";
import { cpuSeconds, fdCount, hardFdLimit, rssBytes, startProc } from "./procs.ts";
import { fmt, mb, type Row } from "./table.ts";

// Descriptors per held poll in the proxy: the client's socket and the homeserver socket (the
// front end serves /sync itself). Measured below too, and reported.
const FDS_PER_POLL = 2;

const WANTED = 10_000;
const POLL_TIMEOUT_MS = 120_000; // longer than the whole measurement: nothing answers on its own
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface IdleOptions {
  /** Seconds over which idle CPU is measured. */
  idleSeconds: number;
  /** Long-polls to hold (default 10,000, capped by the open-files hard limit). */
  polls?: number;
}

export async function runIdle(o: IdleOptions): Promise<Row[]> {
  // Each poll costs the proxy two descriptors (client side, homeserver side); stay under the
  // hard limit, which an unprivileged container cannot raise.
  const hard = hardFdLimit();
  const n = Math.min(o.polls ?? WANTED, Math.floor((hard - 1000) / FDS_PER_POLL));
  const up = startProc(BUN, [join(ROOT, "scripts", "bench", "upstream.ts"), "bench.test"], { raiseFdLimit: true });
  const upPort = Number((await up.waitLine(/upstream listening (\d+)/))[1]);
  const proxy = await startProxyChild(`http://127.0.0.1:${upPort}`, { serverName: "bench.test", raiseFdLimit: true });
  let client: ReturnType<typeof startProc> | undefined;
  const held = async () =>
    ((await (await fetch(`http://127.0.0.1:${upPort}/bench/held`)).json()) as { held: number }).held;
  try {
    // Warm-up: one short sync and one small GET, then the baseline.
    await timedGet(proxy.port, "/_matrix/client/v3/sync?since=s1&timeout=0", { Authorization: "Bearer warm" });
    await timedGet(proxy.port, "/_matrix/client/v3/pushrules/");
    await sleep(1000);
    const baseline = rssBytes(proxy.pid);
    const fds0 = fdCount(proxy.pid);

    client = startProc(
      BUN,
      [join(ROOT, "scripts", "bench", "longpoll-client.ts"), String(proxy.port), String(n), String(POLL_TIMEOUT_MS)],
      { raiseFdLimit: true },
    );
    const opened = await client.waitLine(/^opened (\d+) (\d+)/, 120_000);
    // Wait until the homeserver holds them all, or until the count stops moving for 5 s.
    let reached = 0,
      last = -1,
      still = Date.now();
    while (reached < n && Date.now() - still < 5000) {
      await sleep(250);
      reached = await held();
      if (reached !== last) (last = reached), (still = Date.now());
    }
    await sleep(2000); // let start-up garbage settle before the idle window
    const rssHeld = rssBytes(proxy.pid);
    const fdsPerPoll = (fdCount(proxy.pid) - fds0) / n;
    const cpu0 = cpuSeconds(proxy.pid),
      t0 = performance.now();
    await sleep(o.idleSeconds * 1000);
    const cpuShare = (cpuSeconds(proxy.pid) - cpu0) / ((performance.now() - t0) / 1000);
    const rssIdle = rssBytes(proxy.pid);
    reached = await held();

    // Does a small request still get through while the polls are held?
    let probe: string;
    try {
      const r = await timedGet(proxy.port, "/_matrix/client/v3/pushrules/", {}, 5000);
      probe = r.status === 200 ? `${fmt(r.totalMs, 1)} ms` : `HTTP ${r.status} after ${fmt(r.totalMs, 0)} ms`;
    } catch {
      probe = "no answer within 5 s";
    }
    client.send("status s");
    const st = await client.waitLine(
      /^status s connected=(\d+) answered=(\d+) closed=(\d+) errors=(\d+) first=(.*)$/,
      10_000,
    );

    // The figure is RSS once the polls sit idle, at the end of the idle window: what 10,000
    // idle long-polls cost. The peak, just after the burst that opened them, is shown beside it
    // (the memory reducer gives the burst's garbage back once RSS settles: memory-reducer.ts).
    const rss = rssIdle;
    const perPoll = (rss - baseline) / n;
    const at10k = baseline + perPoll * WANTED;
    const fam = "3 idle long-polls";
    const fdBound = n < (o.polls ?? WANTED);
    const scaled =
      n < WANTED
        ? `${fdBound ? `open-files hard limit ${hard} allows ${fmt(n, 0)} at ${FDS_PER_POLL} fds per poll; ` : ""}10,000 extrapolated linearly`
        : undefined;
    const answeredEarly = Number(st[2]);
    return [
      {
        family: fam,
        figure: "long-polls held open: reached the homeserver / opened",
        value: `${fmt(reached, 0)} / ${fmt(Number(opened[1]), 0)}`,
        reference: `wanted ${fmt(n, 0)}`,
        target: "all",
        met: reached === n && answeredEarly === 0,
        note: answeredEarly ? `${answeredEarly} answered early, first: ${st[5]!.replaceAll("|", "/")}` : undefined,
      },
      {
        family: fam,
        figure: `proxy RSS with ${fmt(n, 0)} polls held, idle (end of the idle window)`,
        value: mb(rss),
        reference: `baseline ${mb(baseline)}; ${fmt(perPoll / 1000, 1)} kB per poll; ${mb(rssHeld)} 2 s after the burst`,
        ratio: n < WANTED ? `≈${mb(at10k, 0)} at 10,000` : undefined,
        target: "<150 MB at 10,000",
        met: (n < WANTED ? at10k : rss) < 150e6,
        note: scaled,
      },
      {
        family: fam,
        figure: `proxy CPU while idle, % of one core over ${o.idleSeconds} s`,
        value: `${fmt(cpuShare * 100, 2)} %`,
        target: "<2 %",
        met: cpuShare < 0.02,
      },
      {
        family: fam,
        figure: "proxy descriptors per held poll",
        value: fmt(fdsPerPoll, 2),
        reference: "nginx: 2 (client and upstream sockets)",
      },
      {
        family: fam,
        figure: "a small GET while the polls are held",
        value: probe,
        target: "answered",
        met: probe.endsWith(" ms"),
      },
    ];
  } finally {
    client?.send("quit");
    await Promise.all([client?.stop(), proxy.stop(), up.stop()]);
  }
}
