// The delivery and storm benchmarks' world: the test suite's fake homeserver (client API) and
// fake remote homeserver (federation over HTTPS with a test CA, checking our X-Matrix
// signatures) in this process, and the compiled proxy as a child process between them,
// configured as test/helpers/world.ts configures it. All on loopback.
import type { IncomingMessage, ServerResponse } from "node:http";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startFakeHomeserver, type FakeHomeserver } from "../../test/helpers/fake-homeserver.ts";
import { startFakeRemote, type FakeRemote } from "../../test/helpers/fake-remote.ts";
import { createTestCa, type TestCa } from "../../test/helpers/tls.ts";
import { benchKey, benchTmp, keyDocument, type ProxyChild, startProxyChild } from "./binary.ts";

export const HS = "hs.test";

type Handler = (req: IncomingMessage, res: ServerResponse, q: URLSearchParams) => void;

export interface BenchWorld {
  hs: FakeHomeserver;
  remote: FakeRemote;
  proxy: ProxyChild;
  /** A local user and device; returns its access token. */
  login(localpart: string, deviceId?: string): string;
  /** Serve GET /_matrix/client/v3/sync and POST …/keys/query on the fake homeserver. */
  onSync(h: Handler): void;
  onKeysQuery(h: Handler): void;
  /** POST an MSC2638 refresh through the proxy. */
  refresh(userId: string, token: string): Promise<Response>;
  close(): Promise<void>;
}

export function sendJson(res: ServerResponse, body: string | Buffer, status = 200): void {
  res.writeHead(status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) });
  res.end(body);
}

/**
 * A JSON answer framed as Synapse frames its /sync: no Content-Length, so chunked (HTTP/1.1), in
 * the 4 KiB pieces its producer writes (synapse/http/server.py, respond_with_json and
 * _write_bytes_to_request: chunk_size = 4096). A client reading it direct pays the de-chunking
 * too, as it does from a real homeserver.
 */
export function sendAsSynapse(res: ServerResponse, body: Buffer): void {
  res.writeHead(200, { "content-type": "application/json" });
  res.cork();
  for (let at = 0; at < body.length; at += 4096) res.write(body.subarray(at, at + 4096));
  res.end();
  res.uncork();
}

export async function startBenchWorld(extraFlags: string[] = [], binaryPath?: string): Promise<BenchWorld> {
  const ca: TestCa = createTestCa("matrix-resync-proxy bench CA");
  const caPath = join(mkdtempSync(join(benchTmp(), "ca-")), "ca.pem");
  writeFileSync(caPath, ca.caPem);
  const hs = await startFakeHomeserver(HS);
  const key = benchKey();
  const remote = await startFakeRemote({ ca, trustedKeys: { [HS]: { [key.keyId]: key.publicKey } } });
  const keyDoc = keyDocument(HS);
  hs.on("/_matrix/key/v2/server", (_q, res) => sendJson(res, keyDoc));
  // The requester's devices (the proxy tells all of them about a refresh): just this one.
  hs.on("/_matrix/client/v3/devices", (req, res) => {
    const token = req.headers.authorization?.slice(7) ?? "";
    const who = hs.tokens.get(token);
    if (!who) return sendJson(res, '{"errcode":"M_UNKNOWN_TOKEN","error":"Unknown token"}', 401);
    sendJson(res, JSON.stringify({ devices: [{ device_id: who[1] }] }));
  });
  let sync: Handler = (_r, res) => sendJson(res, '{"next_batch":"s1"}');
  let keys: Handler = (_r, res) => sendJson(res, "{}");
  const query = (req: IncomingMessage) => new URL(req.url ?? "/", "http://x").searchParams;
  hs.on("/_matrix/client/v3/sync", (req, res) => sync(req, res, query(req)));
  hs.on("/_matrix/client/v3/keys/query", (req, res) => keys(req, res, query(req)));

  const proxy = await startProxyChild(hs.url, {
    serverName: HS,
    extra: ["--federation-ca", caPath, "--federation-allow-cidrs", "127.0.0.0/8", ...extraFlags],
    binaryPath,
  });
  return {
    hs,
    remote,
    proxy,
    login(localpart, deviceId = `${localpart.toUpperCase()}DEV`) {
      const token = `token_${localpart}_${deviceId}`;
      hs.tokens.set(token, [`@${localpart}:${HS}`, deviceId]);
      return token;
    },
    onSync: (h) => void (sync = h),
    onKeysQuery: (h) => void (keys = h),
    refresh: (userId, token) =>
      fetch(`${proxy.url}/_matrix/client/v3/user/${encodeURIComponent(userId)}/devices/refresh`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: "{}",
      }),
    async close() {
      await proxy.stop();
      await remote.close();
      await hs.close();
      ca.cleanup();
    },
  };
}
