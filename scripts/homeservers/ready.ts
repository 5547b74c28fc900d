// Readiness: a Synapse is ready when its plain client listener answers /health and its TLS
// federation listener publishes the expected signing key, verified against the harness CA.
// Checking both catches a half-started server and a stranger squatting on one of our ports.
import { request } from "node:https";
import { setTimeout as sleep } from "node:timers/promises";
import { isAlive, logTail } from "./process.ts";

export interface ReadyTarget {
  clientUrl: string;
  federationUrl: string;
  serverName: string;
  keyId: string;
  caPem: string;
  pid: number;
  logPath: string;
}

/** GET over https trusting only `caPem`; resolves with status and body text. */
export function httpsGet(
  url: string,
  caPem: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "GET", ca: caPem, headers, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`timeout: GET ${url}`)));
    req.on("error", reject);
    req.end();
  });
}

async function healthy(t: ReadyTarget): Promise<string | undefined> {
  try {
    const health = await fetch(`${t.clientUrl}/health`, { signal: AbortSignal.timeout(5_000) });
    const text = await health.text();
    if (health.status !== 200) return `/health answered ${health.status}`;
    if (text.trim() !== "OK") return `/health answered ${JSON.stringify(text)}`;
  } catch (err) {
    return `/health: ${String(err)}`;
  }
  try {
    const key = await httpsGet(`${t.federationUrl}/_matrix/key/v2/server`, t.caPem);
    if (key.status !== 200) return `key endpoint answered ${key.status}`;
    const doc = JSON.parse(key.body) as { server_name?: string; verify_keys?: Record<string, unknown> };
    if (doc.server_name !== t.serverName) return `key endpoint is for ${doc.server_name}, not ${t.serverName}`;
    if (!doc.verify_keys?.[t.keyId]) return `key endpoint does not publish ${t.keyId}`;
  } catch (err) {
    return `key endpoint: ${String(err)}`;
  }
  return undefined;
}

export async function waitReady(t: ReadyTarget, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "not checked yet";
  while (Date.now() < deadline) {
    if (!isAlive(t.pid)) {
      throw new Error(
        `Synapse ${t.serverName} (pid ${t.pid}) exited during start-up; log tail:\n${await logTail(t.logPath)}`,
      );
    }
    const problem = await healthy(t);
    if (problem === undefined) return;
    last = problem;
    await sleep(250);
  }
  throw new Error(
    `Synapse ${t.serverName} not ready after ${timeoutMs} ms (${last}); log tail:\n${await logTail(t.logPath)}`,
  );
}
