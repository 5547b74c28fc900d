// The fakes the replicas family runs against (scripts/bench/replicas.ts, and the wake-only entry
// point scripts/bench-cluster-wake.ts): the test suite's fake homeserver, with the calls the
// proxy makes answered, and its fake remote over HTTPS with a CA of its own.
import type { ServerResponse } from "node:http";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startFakeHomeserver, type FakeHomeserver } from "../../test/helpers/fake-homeserver.ts";
import { startFakeRemote, type FakeRemote } from "../../test/helpers/fake-remote.ts";
import { createTestCa } from "../../test/helpers/tls.ts";
import { benchKey, benchTmp, keyDocument, type ProxyChild, startProxyChild } from "./binary.ts";
import { sendJson } from "./world.ts";

export const HS = "hs.test";

export interface World {
  hs: FakeHomeserver;
  remote: FakeRemote;
  login(localpart: string): string;
  /** Called as the homeserver starts holding a long-poll (timeout > 0). */
  onHeld?: () => void;
  /** A compiled replica against these fakes, with `extra` flags (of another build: A/B runs); stopped by close(). */
  start(extra: string[], binaryPath?: string): Promise<ProxyChild>;
  close(): Promise<void>;
}

export async function startWorld(): Promise<World> {
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
  hs.on("/_matrix/client/v3/keys/query", (_req, res, body) => {
    const asked = Object.keys((JSON.parse(body.toString() || "{}") as { device_keys?: object }).device_keys ?? {});
    sendJson(res, JSON.stringify({ device_keys: Object.fromEntries(asked.map((u) => [u, {}])), failures: {} }));
  });
  const flags = [
    "--federation-ca",
    caPath,
    "--federation-allow-cidrs",
    "127.0.0.0/8",
    // Every refresh waits for its fetch, however long the storm takes to get in, and a held
    // fetch does not time out meanwhile.
    "--refresh-wait-ms",
    "60000",
    "--federation-timeout-ms",
    "120000",
  ];
  const started: ProxyChild[] = [];
  const w: World = {
    hs,
    remote,
    login(localpart) {
      const token = `token_${localpart}`;
      hs.tokens.set(token, [`@${localpart}:${HS}`, `${localpart.toUpperCase()}DEV`]);
      return token;
    },
    async start(extra, binaryPath) {
      const p = await startProxyChild(hs.url, {
        serverName: HS,
        extra: [...flags, ...extra],
        raiseFdLimit: true,
        ...(binaryPath ? { binaryPath } : {}),
      });
      started.push(p);
      return p;
    },
    async close() {
      await Promise.all(started.map((p) => p.stop()));
      await remote.close();
      await hs.close();
      ca.cleanup();
    },
  };
  let batch = 0;
  hs.on("/_matrix/client/v3/sync", (req, res: ServerResponse) => {
    const q = new URL(req.url ?? "/", "http://x").searchParams;
    const answer = () => sendJson(res, JSON.stringify({ next_batch: `nb_${++batch}`, rooms: { join: {} } }));
    const timeout = Number(q.get("timeout") ?? 0);
    if (timeout <= 0) return answer();
    const t = setTimeout(answer, timeout);
    res.on("close", () => clearTimeout(t));
    w.onHeld?.();
  });
  return w;
}
