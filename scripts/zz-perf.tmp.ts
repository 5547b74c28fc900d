import { spawn } from "node:child_process";
import { bigSyncBody } from "../test/helpers/bodies.ts";
import { makeUser } from "../test/helpers/fake-devices.ts";
import { cpuTimes } from "./bench/procs.ts";
import { sendJson, startBenchWorld } from "./bench/world.ts";
const body = Buffer.from(JSON.stringify(bigSyncBody(5_000_000, { nextBatch: "s2" })));
const path = "/_matrix/client/v3/sync?since=s1&timeout=0";
const w = await startBenchWorld(["--rate-user-burst", "1000", "--rate-user-per-minute", "60000"], process.argv[2]);
const alice = makeUser(`@alice:${w.remote.serverName}`, { devices: 10 });
w.remote.setUser(alice);
w.onSync((_req, res) => sendJson(res, body));
const token = w.login("injected"), plain = w.login("plain");
await w.refresh(alice.userId, token);
const n = 60;
for (const [name, tok] of [["inject", token], ["plain", plain], ["inject", token], ["plain", plain]] as const) {
  const go = async () => { await (await fetch(w.proxy.url + path, { headers: { authorization: `Bearer ${tok}` } })).arrayBuffer(); };
  for (let i = 0; i < 10; i++) await go();
  const perf = process.argv[3] === "perf" && name === "inject" ? spawn("perf", ["record", "-g", "-o", `/tmp/sync5/perf-${name}.data`, "-p", String(w.proxy.pid)], { stdio: "ignore" }) : undefined;
  if (perf) await new Promise((r) => setTimeout(r, 500));
  const c0 = cpuTimes(w.proxy.pid);
  for (let i = 0; i < n; i++) await go();
  await new Promise((r) => setTimeout(r, 100));
  const c1 = cpuTimes(w.proxy.pid);
  console.log(name, "user", ((c1.user - c0.user) * 1000 / n).toFixed(2), "sys", ((c1.system - c0.system) * 1000 / n).toFixed(2), "ms per request");
  if (perf) { perf.kill("SIGINT"); await new Promise((r) => setTimeout(r, 1500)); }
}
await w.close();
process.exit(0);
