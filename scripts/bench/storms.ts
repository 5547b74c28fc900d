// Family 5, refresh storms, counted at the fake remote homeserver:
//  a) 1000 local users refresh the same remote user at once. The remote holds its answer until
//     every refresh is inside the proxy, so all 1000 overlap the one fetch (the strict case).
//  b) 1000 local users each refresh a different remote user of one destination at once: the
//     peak number of federation requests in flight there, and the time until all are fetched.
//  c) as b) with 300 users and a remote that answers only every 25 ms (a WAN round trip), so
//     fetches really overlap and the per-destination cap of 3 is what bounds them.
// Every refresh comes from a distinct local user and every target is refreshed once, so the
// per-user and per-target rate limits (defaults 10 and 3) never bind and are left as shipped.
import { makeUser } from "../../test/helpers/fake-devices.ts";
import { timedRequest, type TimedResponse } from "./client.ts";
import { cpuSeconds } from "./procs.ts";
import { fmt, type Row } from "./table.ts";
import { type BenchWorld, startBenchWorld } from "./world.ts";

const N = 1000;
const SLOW_N = 300;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(what: string, ok: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`storms: ${what} not reached within ${timeoutMs} ms`);
    await sleep(5);
  }
}

function refresh(w: BenchWorld, target: string, token: string): Promise<TimedResponse> {
  return timedRequest(
    w.proxy.port,
    "POST",
    `/_matrix/client/v3/user/${encodeURIComponent(target)}/devices/refresh`,
    { Authorization: `Bearer ${token}` },
    "{}",
    120_000,
  );
}

const tally = (rs: TimedResponse[]) => {
  const by = new Map<number, number>();
  for (const r of rs) by.set(r.status, (by.get(r.status) ?? 0) + 1);
  return [...by]
    .sort()
    .map(([s, n]) => `${n}×${s}`)
    .join(", ");
};

export async function runStorms(): Promise<Row[]> {
  const w = await startBenchWorld();
  try {
    const fam = "5 storms";
    const tokens = Array.from({ length: N }, (_, i) => w.login(`storm${i}`));
    const devicesSeen = () => w.hs.seen.filter((s) => s.target === "/_matrix/client/v3/devices").length;

    // a) one target, 1000 requesters, all overlapping one held fetch
    const carol = makeUser(`@carol:${w.remote.serverName}`, { devices: 3 });
    w.remote.setUser(carol);
    w.remote.resetStats();
    const hold = w.remote.hold({ userId: carol.userId });
    const seen0 = devicesSeen();
    const cpuA0 = cpuSeconds(w.proxy.pid);
    const a = Promise.all(tokens.map((t) => refresh(w, carol.userId, t)));
    // A refresh lists its requester's devices just before it joins the fetch.
    await waitUntil("1000 refreshes inside the proxy", () => devicesSeen() - seen0 >= N);
    await sleep(300);
    hold.release();
    const resA = await a;
    const cpuA = cpuSeconds(w.proxy.pid) - cpuA0;
    const fetchesA = w.remote.count({ userId: carol.userId, endpoint: "devices" });
    const maxA = w.remote.maxInFlight;

    // b) 1000 targets on one destination, 1000 requesters
    const targets = Array.from({ length: N }, (_, i) => makeUser(`@t${i}:${w.remote.serverName}`, { devices: 2 }));
    for (const u of targets) w.remote.setUser(u);
    w.remote.resetStats();
    const cpuB0 = cpuSeconds(w.proxy.pid);
    const t0 = performance.now();
    const b = Promise.all(targets.map((u, i) => refresh(w, u.userId, tokens[i]!)));
    await waitUntil(
      "1000 device-list fetches answered",
      () => w.remote.count({ endpoint: "devices" }) >= N && w.remote.inFlight === 0,
      120_000,
    );
    const fetchedMs = performance.now() - t0;
    const resB = await b;
    const cpuB = cpuSeconds(w.proxy.pid) - cpuB0;
    const maxB = w.remote.maxInFlight;
    const fetchesB = w.remote.count({ endpoint: "devices" });

    // c) a slow remote: every 25 ms it answers what it holds (0–25 ms of latency per fetch)
    const slow = Array.from({ length: SLOW_N }, (_, i) => makeUser(`@slow${i}:${w.remote.serverName}`, { devices: 2 }));
    for (const u of slow) w.remote.setUser(u);
    w.remote.resetStats();
    let tick = w.remote.hold({ endpoint: "devices" });
    const ticker = setInterval(() => {
      const next = w.remote.hold({ endpoint: "devices" });
      tick.release();
      tick = next;
    }, 25);
    const tc0 = performance.now();
    const resC = await Promise.all(slow.map((u, i) => refresh(w, u.userId, tokens[i]!)));
    await waitUntil(
      "300 slow fetches answered",
      () => w.remote.count({ endpoint: "devices" }) >= SLOW_N && w.remote.inFlight === 0,
      120_000,
    );
    const slowMs = performance.now() - tc0;
    clearInterval(ticker);
    tick.release();
    const maxC = w.remote.maxInFlight;

    return [
      {
        family: fam,
        figure: "1000 concurrent refreshes of one user: federation requests",
        value: String(fetchesA),
        reference: `answers ${tally(resA)}`,
        target: "exactly 1",
        met: fetchesA === 1 && resA.every((r) => r.status === 202),
      },
      {
        family: fam,
        figure: "1000 users on one destination: peak concurrent federation requests",
        value: String(maxB),
        reference: `${fetchesB} fetches; answers ${tally(resB)}`,
        target: "≤3",
        met: maxB <= 3 && maxA <= 3,
      },
      {
        family: fam,
        figure: "1000 users on one destination: time until all are fetched",
        value: `${fmt(fetchedMs / 1000, 2)} s`,
        reference: `${fmt(N / (fetchedMs / 1000), 0)} fetches/s at ≤3 in flight`,
      },
      {
        family: fam,
        figure: `${SLOW_N} users on one slow destination (answers every 25 ms): peak concurrent`,
        value: String(maxC),
        reference: `all fetched in ${fmt(slowMs / 1000, 2)} s; answers ${tally(resC)}`,
        target: "≤3",
        met: maxC <= 3,
      },
      {
        family: fam,
        figure: "proxy CPU per refresh, ms",
        value: `${fmt((cpuB / N) * 1000, 2)} (own fetch each)`,
        reference: `${fmt((cpuA / N) * 1000, 2)} when 1000 share one fetch`,
      },
    ];
  } finally {
    await w.close();
  }
}
