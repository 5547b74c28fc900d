// Two builds of the proxy side by side on pass-through: rounds alternate between them (and
// nginx), so the machine's noise hits each alike; prints each round's req/s and CPU per
// request (user + kernel, µs) and the medians. For keeping or dropping a change by what it
// buys. Usage: bun scripts/bench-ab.ts BINARY_A BINARY_B [rounds] [seconds] [bun|nginx]
import { join } from "node:path";
import { ROOT, BUN, startProxyChild } from "./bench/binary.ts";
import { childPids, cpuTimes, startProc } from "./bench/procs.ts";
import { startStaticUpstream } from "./bench/static-upstream.ts";
import { median } from "./bench/table.ts";
import { startNginx, wrk } from "./bench/wrk.ts";

const [a, b, rounds = "8", seconds = "3", kind = "bun"] = process.argv.slice(2);
if (!a || !b) throw new Error("usage: bun scripts/bench-ab.ts BINARY_A BINARY_B [rounds] [seconds] [bun|nginx]");
let upPort: number;
if (kind === "nginx") upPort = (await startStaticUpstream("bench.test")).port;
else {
  const up = startProc(BUN, [join(ROOT, "scripts", "bench", "upstream.ts"), "bench.test"]);
  upPort = Number((await up.waitLine(/upstream listening (\d+)/))[1]);
}
const nginx = await startNginx(upPort);
const targets: { name: string; port: number; pids: number[] }[] = [
  { name: "nginx", port: nginx.port, pids: childPids(nginx.proc.pid) },
];
for (const [name, path] of [
  ["A", a],
  ["B", b],
] as const) {
  const p = await startProxyChild(`http://127.0.0.1:${upPort}`, { serverName: "bench.test", binaryPath: path });
  targets.push({ name, port: p.port, pids: [p.pid] });
}
const path = "/_matrix/client/v3/pushrules/";
for (const t of targets) wrk(`http://127.0.0.1:${t.port}${path}`, 64, 1);
const got: Record<string, { rps: number; cpu: number; user: number }[]> = {};
for (let r = 0; r < Number(rounds); r++) {
  const order = r % 2 === 0 ? targets : [...targets].reverse();
  for (const t of order) {
    const before = t.pids.map(cpuTimes),
      t0 = performance.now();
    const res = wrk(`http://127.0.0.1:${t.port}${path}`, 64, Number(seconds));
    const secs = (performance.now() - t0) / 1000;
    const after = t.pids.map(cpuTimes);
    let user = 0,
      sys = 0;
    after.forEach((x, i) => ((user += x.user - before[i]!.user), (sys += x.system - before[i]!.system)));
    const n = res.rps * secs;
    (got[t.name] ??= []).push({ rps: res.rps, cpu: ((user + sys) / n) * 1e6, user: (user / n) * 1e6 });
    console.log(
      `round ${r} ${t.name}: ${res.rps.toFixed(0)} req/s, ${(((user + sys) / n) * 1e6).toFixed(2)} µs (user ${((user / n) * 1e6).toFixed(2)})`,
    );
  }
}
for (const [name, xs] of Object.entries(got))
  console.log(
    `${name}: median ${median(xs.map((x) => x.rps)).toFixed(0)} req/s, ${median(xs.map((x) => x.cpu)).toFixed(2)} µs/request (user ${median(xs.map((x) => x.user)).toFixed(2)}); cpu range ${Math.min(...xs.map((x) => x.cpu)).toFixed(2)}–${Math.max(...xs.map((x) => x.cpu)).toFixed(2)}`,
  );
process.exit(0);
