// Shared by the ops-*.test.ts files: read Prometheus text, publish our key from the fake
// homeserver, start a proxy with a captured log, and play Synapse's admin endpoint.
import type { ServerResponse } from "node:http";
import { loadSigningKey } from "../../src/federation/keyfile.ts";
import { signJson, type SigningKey } from "../../src/federation/signing.ts";
import { createLogger, type Level } from "../../src/observe/log.ts";
import { startProxy } from "../../src/commands/serve.ts";
import type { FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { testConfig, writeTestKey } from "../helpers/proxy.ts";

export async function scrape(opsAddress: string): Promise<string> {
  const res = await fetch(`http://${opsAddress}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return res.text();
}

/** The sample `name{labels}` in Prometheus text; 0 when absent. Label order does not matter. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels);
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map([...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1]!, x[2]!]));
    if (want.every(([k, v]) => have.get(k) === v) && have.size === want.length) return Number(m[3]);
  }
  return 0;
}

export const json = (res: ServerResponse, status: number, body: unknown) => {
  const s = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(s) });
  res.end(s);
};

/** The homeserver publishes `key` (default: the test key) at /_matrix/key/v2/server. */
export async function publishKey(hs: FakeHomeserver, key?: SigningKey): Promise<void> {
  const k = key ?? (await loadSigningKey(writeTestKey()));
  hs.on("/_matrix/key/v2/server", (_req, res) =>
    json(
      res,
      200,
      signJson(
        {
          server_name: "hs.test",
          valid_until_ts: Date.now() + 86_400_000,
          verify_keys: { [k.keyId]: { key: k.publicKey } },
          old_verify_keys: {},
        },
        "hs.test",
        k,
      ),
    ),
  );
}

/** Synapse's GET /_synapse/admin/v1/users/{userId}/admin: 403 M_FORBIDDEN for non-admin callers. */
export function playSynapseAdmin(hs: FakeHomeserver, admins: Set<string>): void {
  hs.on("/_synapse/admin/v1/users/", (req, res) => {
    const token = req.headers.authorization?.replace(/^Bearer /, "") ?? "";
    const who = hs.tokens.get(token);
    if (!who) return json(res, 401, { errcode: "M_UNKNOWN_TOKEN", error: "Invalid access token passed." });
    if (!admins.has(who[0])) return json(res, 403, { errcode: "M_FORBIDDEN", error: "You are not a server admin" });
    const target = decodeURIComponent(req.url!.split("/")[5] ?? "");
    json(res, 200, { admin: admins.has(target) });
  });
}

/** The proxy in-process with its log lines kept, and the config it was started with. */
export async function startLoggedProxy(upstream: string, extra: string[] = [], level: Level = "debug") {
  const lines: string[] = [];
  const config = testConfig(upstream, ["--metrics-listen", "127.0.0.1:0", ...extra]);
  const proxy = await startProxy(
    config,
    createLogger(level, (l) => void lines.push(l)),
  );
  const port = Number(proxy.address.split(":").pop());
  return {
    ...proxy,
    config,
    url: `http://127.0.0.1:${port}`,
    ops: `http://${proxy.opsAddress}`,
    lines,
    records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
