// Cross-replica wake: two compiled proxies on one throw-away PostgreSQL (--database postgres://),
// the fake homeserver and fake remote of the test suite in this process. A device's long-poll is
// held by one replica; a refresh of a remote user by that device is answered by the same replica
// (reference) or by the other one (the bus: LISTEN/NOTIFY). Measured: from the refresh's 202 to
// the long-poll's answer naming the user, alternating the two cases round by round.
// Usage: bun scripts/bench-cluster-wake.ts [rounds=60]
import type { ServerResponse } from "node:http";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeUser } from "../test/helpers/fake-devices.ts";
import { startFakeHomeserver } from "../test/helpers/fake-homeserver.ts";
import { startFakeRemote } from "../test/helpers/fake-remote.ts";
import { startPostgres } from "../test/helpers/postgres.ts";
import { createTestCa } from "../test/helpers/tls.ts";
import { benchKey, benchTmp, keyDocument, type ProxyChild, startProxyChild } from "./bench/binary.ts";
import { nproc } from "./bench/procs.ts";
import { fmt, median, percentile, renderTable } from "./bench/table.ts";
import { HS, sendJson } from "./bench/world.ts";

const rounds = Number(process.argv[2] ?? 60);
const pg = await startPostgres();
const db = await pg.createDatabase("bench");
const ca = createTestCa("matrix-resync-proxy bench CA");
const caPath = join(mkdtempSync(join(benchTmp(), "ca-")), "ca.pem");
writeFileSync(caPath, ca.caPem);
const hs = await startFakeHomeserver(HS);
const key = benchKey();
const remote = await startFakeRemote({ ca, trustedKeys: { [HS]: { [key.keyId]: key.publicKey } } });
const keyDoc = keyDocument(HS);
hs.on("/_matrix/key/v2/server", (_q, res) => sendJson(res, keyDoc));
hs.on("/_matrix/client/v3/devices", (req, res) => {
  const who = hs.tokens.get(req.headers.authorization?.slice(7) ?? "");
  if (!who) return sendJson(res, '{"errcode":"M_UNKNOWN_TOKEN","error":"Unknown token"}', 401);
  sendJson(res, JSON.stringify({ devices: [{ device_id: who[1] }] }));
});
hs.on("/_matrix/client/v3/keys/query", (_req, res) => sendJson(res, '{"device_keys":{},"failures":{}}'));
let batch = 0;
let onHeld: (() => void) | undefined;
hs.on("/_matrix/client/v3/sync", (req, res: ServerResponse) => {
  const q = new URL(req.url ?? "/", "http://x").searchParams;
  const answer = () => sendJson(res, JSON.stringify({ next_batch: `nb_${++batch}`, rooms: { join: {} } }));
  const timeout = Number(q.get("timeout") ?? 0);
  if (timeout <= 0) return answer();
  const t = setTimeout(answer, timeout);
  res.on("close", () => clearTimeout(t));
  onHeld?.();
});
const flags = [
  "--federation-ca",
  caPath,
  "--federation-allow-cidrs",
  "127.0.0.0/8",
  "--database",
  db,
  "--rate-user-burst",
  "100000",
];
const a: ProxyChild = await startProxyChild(hs.url, { serverName: HS, extra: flags });
const b: ProxyChild = await startProxyChild(hs.url, { serverName: HS, extra: flags });

const get = (url: string, token: string) => fetch(url, { headers: { authorization: `Bearer ${token}` } });
hs.tokens.set("token_waker", [`@waker:${HS}`, "WAKERDEV"]);
const token = "token_waker";

/** One wake: the poll held by `holder`, the refresh answered by `refresher`; ms from 202 to answer. */
async function wake(i: number, holder: ProxyChild, refresher: ProxyChild): Promise<number> {
  const target = `@wake${i}:${remote.serverName}`;
  remote.setUser(makeUser(target, { devices: 2 }));
  const first = (await (await get(`${holder.url}/_matrix/client/v3/sync?since=s1&timeout=0`, token)).json()) as {
    next_batch: string;
  };
  // As a client does: poll again from each answer until one names the user. An answer that does
  // not (a wake meant for an earlier round, its notification still on the way) is counted.
  let since = first.next_batch;
  let woke = 0;
  let answered = Number.POSITIVE_INFINITY;
  let refreshed: Promise<void> | undefined;
  for (;;) {
    const held = new Promise<void>((r) => (onHeld = r));
    const poll = get(
      `${holder.url}/_matrix/client/v3/sync?since=${encodeURIComponent(since)}&timeout=30000`,
      token,
    ).then(async (r) => {
      woke = performance.now();
      return (await r.json()) as { next_batch: string; device_lists?: { changed?: string[] } };
    });
    if (!refreshed) {
      await Promise.race([held, poll]);
      refreshed = (async () => {
        const res = await fetch(
          `${refresher.url}/_matrix/client/v3/user/${encodeURIComponent(target)}/devices/refresh`,
          {
            method: "POST",
            headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
            body: "{}",
          },
        );
        answered = performance.now();
        if (res.status !== 202) throw new Error(`refresh answered ${res.status}: ${await res.text()}`);
      })();
    }
    const body = await poll;
    if (body.device_lists?.changed?.includes(target)) break;
    spurious++;
    since = body.next_batch;
  }
  await refreshed;
  // The answer may come before the 202 is read (the poll is woken before the refresh answers).
  return Math.max(0, woke - answered);
}

let spurious = 0;
const same: number[] = [];
const cross: number[] = [];
for (let i = 0; i < rounds + 2; i++) {
  const s = await wake(2 * i, a, a);
  const c = await wake(2 * i + 1, b, a);
  if (i < 2) continue; // warm-up
  same.push(s);
  cross.push(c);
}
const show = (xs: number[]) =>
  `p50 ${fmt(median(xs), 1)} / p99 ${fmt(percentile(xs, 99), 1)} / max ${fmt(Math.max(...xs), 1)}`;
console.log(`\nCross-replica wake, 2 compiled replicas on PostgreSQL; ${nproc()} cores shared with everything\n`);
console.log(
  renderTable([
    {
      family: "replicas",
      figure: `refresh's 202 on A → answer of the long-poll held by B, ms (${rounds} wakes)`,
      value: show(cross),
      reference: `held by A itself: ${show(same)}; answers without the user (polled again): ${spurious}`,
      target: "<100 ms (p99)",
      met: percentile(cross, 99) < 100,
    },
  ]),
);
await a.stop();
await b.stop();
await remote.close();
await hs.close();
ca.cleanup();
await pg.close();
process.exit(0);
