// The replicas family's wake rows (scripts/bench/replicas.ts; scripts/bench-cluster-wake.ts runs
// them alone): a device's long-poll waits at the homeserver through replica B; the same device
// asks replica A to refresh a remote user. Against the same with the poll held by A itself,
// round by round. The asker is the poller: a refresh books its devices as trackers before the
// fan-out (resync/bookings.ts), where a tracker written by another request (a /keys/query) may
// land after it under load, and that poll would then never be woken. Two figures from the same wakes: from A's `202` to B's
// answer naming the user (the bus alone: LISTEN/NOTIFY; the answer often comes before the 202
// is read: 0), and from sending the refresh (the loopback federation fetch included).
import { makeUser } from "../../test/helpers/fake-devices.ts";
import type { ProxyChild } from "./binary.ts";
import { timedGet, timedRequest } from "./client.ts";
import { fmt, median, percentile, type Row } from "./table.ts";
import type { World } from "./replicas-world.ts";

const FAM = "7 replicas";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pp = (xs: number[]) => `p50 ${fmt(median(xs), 1)} / p99 ${fmt(percentile(xs, 99), 1)}`;
const ppm = (xs: number[]) => `${pp(xs)} / max ${fmt(Math.max(...xs), 1)}`;

interface Wake {
  /** ms from sending the refresh to the long-poll's answer naming the user. */
  fromSend: number;
  /** ms from the refresh's 202 being read to that answer (0 when the answer came first). */
  from202: number;
  /** Answers without the user before it (the client polled again). */
  spurious: number;
}

async function wakeOnce(w: World, refresher: ProxyChild, poller: ProxyChild, i: number): Promise<Wake> {
  const token = w.login(`waker${i}`);
  const target = `@wake${i}:${w.remote.serverName}`;
  w.remote.setUser(makeUser(target, { devices: 2 }));
  const auth = { Authorization: `Bearer ${token}` };
  const first = await timedGet(poller.port, "/_matrix/client/v3/sync?timeout=0", auth);
  let since = /"next_batch":"([^"]+)"/.exec(first.bodyHead)?.[1];
  let woke = 0;
  const poll = () => {
    const held = new Promise<void>((r) => (w.onHeld = r));
    const answer = timedGet(
      poller.port,
      `/_matrix/client/v3/sync?since=${encodeURIComponent(since ?? "")}&timeout=30000`,
      auth,
    ).then((r) => {
      woke = performance.now();
      return r;
    });
    return { held, answer };
  };
  let p = poll();
  await p.held;
  await sleep(5);
  const t0 = performance.now();
  const res = await timedRequest(
    refresher.port,
    "POST",
    `/_matrix/client/v3/user/${encodeURIComponent(target)}/devices/refresh`,
    auth,
    "{}",
  );
  const answered = performance.now();
  if (res.status !== 202) throw new Error(`replicas: refresh answered ${res.status}: ${res.bodyHead}`);
  // As a client does: poll again from an answer that does not name the user (a wake meant for
  // something else), counted.
  let spurious = 0;
  for (;;) {
    const body = (await p.answer).bodyHead;
    if (body.includes(target)) break;
    if (++spurious > 2) throw new Error(`replicas: no long-poll answer names ${target}`);
    since = /"next_batch":"([^"]+)"/.exec(body)?.[1];
    p = poll();
  }
  return { fromSend: woke - t0, from202: Math.max(0, woke - answered), spurious };
}

export async function wakes(w: World, a: ProxyChild, b: ProxyChild, n: number): Promise<Row[]> {
  const cross: Wake[] = [];
  const same: Wake[] = [];
  for (let i = 0; i < n + 2; i++) {
    const x = await wakeOnce(w, a, b, 2 * i);
    const y = await wakeOnce(w, a, a, 2 * i + 1);
    if (i < 2) continue; // warm-up
    cross.push(x);
    same.push(y);
  }
  const of = (ws: Wake[], k: "fromSend" | "from202") => ws.map((x) => x[k]);
  const spurious = [...cross, ...same].reduce((s, x) => s + x.spurious, 0);
  return [
    {
      family: FAM,
      figure: `refresh's 202 on A → answer of the long-poll held by B, ms (${n} wakes)`,
      value: ppm(of(cross, "from202")),
      reference: `held by A itself: ${ppm(of(same, "from202"))}`,
      note: `answers without the user (polled again): ${spurious}`,
      target: "p99 < 100 ms",
      met: percentile(of(cross, "from202"), 99) < 100,
    },
    {
      family: FAM,
      figure: `refresh on A → wake of a long-poll held by B, ms (${n} wakes, loopback federation fetch included)`,
      value: pp(of(cross, "fromSend")),
      reference: `A → A (same replica) ${pp(of(same, "fromSend"))}`,
      ratio: `+${fmt(median(of(cross, "fromSend")) - median(of(same, "fromSend")), 1)} ms p50`,
      target: "p99 < 100 ms",
      met: percentile(of(cross, "fromSend"), 99) < 100,
    },
  ];
}
