// Family 3, idle long-polls: up to 100,000 concurrent /sync long-polls (distinct users and
// devices) held open through the proxy, then the same number through nginx, the homeserver
// (upstream.ts) holding each one. Measured for each: how many reach the homeserver, RSS per
// held poll, CPU while they sit idle, and (proxy) whether a small request still gets through.
// Every process here has its soft open-files limit raised to the hard limit; the count is
// capped by that limit, which only a privileged process (CAP_SYS_RESOURCE) can raise.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { BUN, ROOT, startProxyChild } from "./binary.ts";
import { timedGet } from "./client.ts";
import { childPids, cpuSeconds, fdCount, hardFdLimit, rssBytes, startProc } from "./procs.ts";
import { FDS_PER_POLL, type Held, rows } from "./idle-rows.ts";
import { fmt, type Row } from "./table.ts";
import { startNginx } from "./wrk.ts";

const WANTED = 100_000;
const POLL_TIMEOUT_MS = 300_000; // longer than the whole measurement: nothing answers on its own
// Source addresses for the client (longpoll-client.ts): one per 25,000 polls.
const SOURCES = Math.ceil(WANTED / 25_000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Connections one source address can hold to one destination address and port: the size of
 * the ephemeral port range. A relay connects to the homeserver from one address (Bun.connect
 * takes no local address; nginx would need proxy_bind), so this caps the polls it can hold
 * whatever the open-files limit. Less 500 for everything else using the range meanwhile.
 */
function portRange(): number {
  try {
    const [lo, hi] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
    return hi! - lo! + 1 - 500;
  } catch {
    return 28_232 - 500; // Linux's default range, 32768–60999
  }
}

export interface IdleOptions {
  /** Seconds over which idle CPU is measured. */
  idleSeconds: number;
  /** Long-polls to hold (default 100,000, capped by the open-files hard limit). */
  polls?: number;
  /** Also hold them through nginx (default true). */
  nginx?: boolean;
}

const sum = (pids: number[], f: (pid: number) => number) => pids.reduce((a, p) => a + f(p), 0);

/** Hold n polls through the relay on `port` whose processes are `pids`; measure them; let go. */
async function holdThrough(
  port: number,
  pids: number[],
  n: number,
  held: () => Promise<number>,
  o: IdleOptions,
  probe: boolean,
): Promise<Held> {
  await sleep(1000);
  const baseline = sum(pids, rssBytes);
  const fds0 = sum(pids, fdCount);
  const client = startProc(
    BUN,
    [
      join(ROOT, "scripts", "bench", "longpoll-client.ts"),
      String(port),
      String(n),
      String(POLL_TIMEOUT_MS),
      String(SOURCES),
    ],
    { raiseFdLimit: true },
  );
  try {
    const opened = await client.waitLine(/^opened (\d+) (\d+)/, 300_000);
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
    const rssHeld = sum(pids, rssBytes);
    const fdsPerPoll = (sum(pids, fdCount) - fds0) / n;
    const cpu0 = sum(pids, cpuSeconds),
      t0 = performance.now();
    await sleep(o.idleSeconds * 1000);
    const cpuShare = (sum(pids, cpuSeconds) - cpu0) / ((performance.now() - t0) / 1000);
    const rssIdle = sum(pids, rssBytes);
    reached = await held();
    let probed: string | undefined;
    if (probe) {
      // Does a small request still get through while the polls are held?
      try {
        const r = await timedGet(port, "/_matrix/client/v3/pushrules/", {}, 5000);
        probed = r.status === 200 ? `${fmt(r.totalMs, 1)} ms` : `HTTP ${r.status} after ${fmt(r.totalMs, 0)} ms`;
      } catch {
        probed = "no answer within 5 s";
      }
    }
    client.send("status s");
    const st = await client.waitLine(
      /^status s connected=(\d+) answered=(\d+) closed=(\d+) errors=(\d+) first=(.*)$/,
      10_000,
    );
    return {
      reached,
      opened: Number(opened[1]),
      baseline,
      rssHeld,
      rssIdle,
      cpuShare,
      fdsPerPoll,
      answeredEarly: Number(st[2]),
      firstAnswer: st[5]!,
      probe: probed,
    };
  } finally {
    client.send("quit");
    await client.stop();
    // The relay cancels each upstream request as its client leaves: wait for the homeserver
    // to let go of them all before the next relay's turn.
    for (let t = 0; t < 120 && (await held()) > 0; t++) await sleep(250);
  }
}

export async function runIdle(o: IdleOptions): Promise<Row[]> {
  // Each poll costs a relay two descriptors (client side, homeserver side); stay under the
  // hard limit, which an unprivileged container cannot raise.
  const hard = hardFdLimit();
  const wanted = o.polls ?? WANTED;
  const byFds = Math.floor((hard - 1000) / FDS_PER_POLL);
  const byPorts = portRange();
  const n = Math.min(wanted, byFds, byPorts);
  const up = startProc(BUN, [join(ROOT, "scripts", "bench", "upstream.ts"), "bench.test"], { raiseFdLimit: true });
  const upPort = Number((await up.waitLine(/upstream listening (\d+)/))[1]);
  const proxy = await startProxyChild(`http://127.0.0.1:${upPort}`, { serverName: "bench.test", raiseFdLimit: true });
  // nginx's workers each need room for every poll: accepts need not spread evenly.
  const nginx =
    o.nginx === false ? undefined : await startNginx(upPort, { connections: hard - 100, raiseFdLimit: true });
  const held = async () =>
    ((await (await fetch(`http://127.0.0.1:${upPort}/bench/held`)).json()) as { held: number }).held;
  try {
    // Warm-up: one short sync and one small GET through each relay, then the baseline.
    for (const port of [proxy.port, ...(nginx ? [nginx.port] : [])]) {
      await timedGet(port, "/_matrix/client/v3/sync?since=s1&timeout=0", { Authorization: "Bearer warm" });
      await timedGet(port, "/_matrix/client/v3/pushrules/");
    }
    const p = await holdThrough(proxy.port, [proxy.pid], n, held, o, true);
    const ng = nginx
      ? await holdThrough(nginx.port, [nginx.proc.pid, ...childPids(nginx.proc.pid)], n, held, o, false)
      : undefined;
    return rows(p, ng, n, wanted, hard, byFds <= byPorts, o);
  } finally {
    await Promise.all([proxy.stop(), nginx?.proc.stop(), up.stop()]);
  }
}
