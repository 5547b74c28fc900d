// Two builds of the proxy side by side on the 5 MB /sync with injection (family 4's figure):
// each in its own bench world (fake homeserver + remote), requests alternating between direct,
// A and B, rotating the order every request, in several rounds; prints each round's p50/p99 and
// the medians and ranges of the extra over direct. For keeping or dropping a change by what it
// buys. Usage: bun scripts/bench-sync-ab.ts BINARY_A BINARY_B [rounds] [samples] [bytes]
// With BENCH_PROFILE=dir both run from source under the profiler (binary.ts).
import { bigSyncBody } from "../test/helpers/bodies.ts";
import { makeUser } from "../test/helpers/fake-devices.ts";
import { cpuSeconds } from "./bench/procs.ts";
import { fmt, median, percentile } from "./bench/table.ts";
import { type BenchWorld, sendAsSynapse, sendJson, startBenchWorld } from "./bench/world.ts";

const [a, b, rounds = "5", samples = "50", bytes = "5000000"] = process.argv.slice(2);
if (!a || !b) throw new Error("usage: bun scripts/bench-sync-ab.ts BINARY_A BINARY_B [rounds] [samples] [bytes]");
// SYNC_FRAMING=synapse: the homeserver answers chunked in 4 KiB pieces, as Synapse does (world.ts).
const synapse = process.env.SYNC_FRAMING === "synapse";
// SYNC_INJECT=0: nothing to inject (no refresh made): what reading the body for detection costs.
// SYNC_FLAGS_A / SYNC_FLAGS_B: extra flags for A / B (say, `--detect off`), space-separated.
const inject = process.env.SYNC_INJECT !== "0";
const flags = (k: string) => (process.env[k] ?? "").split(" ").filter(Boolean);
// SYNC_CHANGED=1: the body names device_lists (Synapse does when a list changed), before `rooms`.
const changed = process.env.SYNC_CHANGED ? ["@someone:example.org"] : undefined;
const body = Buffer.from(JSON.stringify(bigSyncBody(Number(bytes), { nextBatch: "s2", changed })));
const path = "/_matrix/client/v3/sync?since=s1&timeout=0";

async function world(bin: string, extra: string[]): Promise<{ w: BenchWorld; token: string }> {
  const w = await startBenchWorld(["--rate-user-burst", "1000", "--rate-user-per-minute", "60000", ...extra], bin);
  const alice = makeUser(`@alice:${w.remote.serverName}`, { devices: 10 });
  w.remote.setUser(alice);
  w.onSync((_req, res) => (synapse ? sendAsSynapse(res, body) : sendJson(res, body)));
  const token = w.login("injected");
  if (!inject) return { w, token };
  const r = await w.refresh(alice.userId, token);
  if (r.status !== 202) throw new Error(`refresh answered ${r.status}`);
  const probe = (await (await fetch(w.proxy.url + path, { headers: { authorization: `Bearer ${token}` } })).json()) as {
    device_lists?: { changed?: string[] };
  };
  if (!probe.device_lists?.changed?.includes(alice.userId)) throw new Error("no injection for alice");
  return { w, token };
}

const A = await world(a, flags("SYNC_FLAGS_A")),
  B = await world(b, flags("SYNC_FLAGS_B"));
const direct = A.w.login("direct");
const drain = (url: string, token: string) => async () => {
  const t = performance.now();
  await (await fetch(url, { headers: { authorization: `Bearer ${token}` } })).arrayBuffer();
  return performance.now() - t;
};
const configs: Record<string, () => Promise<number>> = {
  direct: drain(A.w.hs.url + path, direct),
  A: drain(A.w.proxy.url + path, A.token),
  B: drain(B.w.proxy.url + path, B.token),
};
const names = Object.keys(configs);
const extra: Record<string, { p50: number[]; p99: number[]; cpu: number[] }> = {
  A: { p50: [], p99: [], cpu: [] },
  B: { p50: [], p99: [], cpu: [] },
};
const pids: Record<string, number> = { A: A.w.proxy.pid, B: B.w.proxy.pid };
for (let r = 0; r < Number(rounds); r++) {
  const t: Record<string, number[]> = Object.fromEntries(names.map((k) => [k, []]));
  let cpu0: Record<string, number> = {};
  for (let i = 0; i < 10 + Number(samples); i++) {
    // Each proxy's own CPU (all threads) over the timed requests, what each settle left included.
    if (i === 10) cpu0 = { A: cpuSeconds(pids.A!), B: cpuSeconds(pids.B!) };
    for (let j = 0; j < names.length; j++) {
      const name = names[(i + j) % names.length]!;
      const ms = await configs[name]!();
      if (i >= 10) t[name]!.push(ms);
    }
  }
  await new Promise((res) => setTimeout(res, 100));
  const cpu = (k: string) => ((cpuSeconds(pids[k]!) - cpu0[k]!) * 1000) / Number(samples);
  const line = names.map((k) => `${k} p50 ${fmt(median(t[k]!), 2)} / p99 ${fmt(percentile(t[k]!, 99), 2)}`);
  console.log(`round ${r}: ${line.join("; ")}; CPU per request A ${fmt(cpu("A"), 2)} ms, B ${fmt(cpu("B"), 2)} ms`);
  for (const k of ["A", "B"]) {
    extra[k]!.p50.push(median(t[k]!) - median(t.direct!));
    extra[k]!.p99.push(percentile(t[k]!, 99) - percentile(t.direct!, 99));
    extra[k]!.cpu.push(cpu(k));
  }
}
const range = (xs: number[]) => `${fmt(median(xs), 2)} (${fmt(Math.min(...xs), 2)} … ${fmt(Math.max(...xs), 2)})`;
for (const k of ["A", "B"])
  console.log(
    `${k}: extra over direct p50 ${range(extra[k]!.p50)}, p99 ${range(extra[k]!.p99)}; proxy CPU per request ${range(extra[k]!.cpu)} ms`,
  );
await Promise.all([A.w.close(), B.w.close()]);
process.exit(0);
