// The cost of trusting --federation-ca on each federation request (src/federation/https.ts):
// the trust store given as a `ca` list (the system roots plus the extra CA, what the proxy
// passed before) against one secure context built once (what it passes now), through a
// keep-alive agent to a local TLS server, rounds alternating. Prints CPU and wall time per
// request and RSS growth; no thresholds (docs/performance.md, "Tenth session").
// Usage: npx bun scripts/bench-tls-trust.ts [requests] [rounds]      (binds 127.0.0.1 only)
import https from "node:https";
import { readFileSync } from "node:fs";
import tls from "node:tls";
import { createTestCa } from "../test/helpers/tls.ts";

const requests = Number(process.argv[2] ?? 2000);
const rounds = Number(process.argv[3] ?? 3);
const ca = createTestCa();
const leaf = ca.issue("remote.test", ["DNS:remote.test"]);
const body = JSON.stringify({ user_id: "@u:remote.test", stream_id: 1, devices: [{ device_id: "D" }] });
const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  tls: { key: leaf.key, cert: leaf.cert },
  fetch: () => new Response(body, { headers: { "content-type": "application/json" } }),
});

const agent = new https.Agent({ keepAlive: true, maxSockets: 3 });
const context = tls.createSecureContext({ ca: [...tls.rootCertificates, ca.caPem] });
type Trust = Pick<tls.ConnectionOptions, "ca" | "secureContext">;
const ways: Record<string, () => Trust> = {
  "ca list per request (before)": () => ({ ca: [...tls.rootCertificates, ca.caPem] }),
  "secure context built once (now)": () => ({ secureContext: context }),
};
const rssMb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync("/proc/self/status", "utf8"))![1]) / 1024;

function once(trust: Trust): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: "127.0.0.1", port: server.port, path: "/", servername: "remote.test", agent, ...trust },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => (JSON.parse(Buffer.concat(chunks).toString()), resolve()));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

const seen: Record<string, { cpu: number[]; wall: number[]; rss: number[] }> = {};
for (let k = 0; k < rounds; k++) {
  for (const [name, trust] of Object.entries(ways)) {
    for (let i = 0; i < 50; i++) await once(trust()); // warm: the connection is open
    Bun.gc(true);
    const r0 = rssMb();
    let peak = r0;
    const c0 = process.cpuUsage(),
      t0 = performance.now();
    for (let i = 0; i < requests; i++) {
      await once(trust());
      if (i % 50 === 0) peak = Math.max(peak, rssMb());
    }
    const c = process.cpuUsage(c0);
    const s = (seen[name] ??= { cpu: [], wall: [], rss: [] });
    s.cpu.push((c.user + c.system) / 1000 / requests);
    s.wall.push((performance.now() - t0) / requests);
    s.rss.push(peak - r0);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(`${requests} requests a round, ${rounds} rounds alternating; medians (min … max)`);
for (const [name, s] of Object.entries(seen)) {
  const f = (xs: number[], unit: string, d = 3) =>
    `${median(xs).toFixed(d)} ${unit} (${Math.min(...xs).toFixed(d)} … ${Math.max(...xs).toFixed(d)})`;
  console.log(
    `  ${name}: CPU ${f(s.cpu, "ms")} a request, wall ${f(s.wall, "ms")}, RSS peak growth ${f(s.rss, "MB", 1)}`,
  );
}
agent.destroy();
server.stop(true);
ca.cleanup();
