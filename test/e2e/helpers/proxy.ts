// The proxy under test, in front of hs1's plain-http client listener, configured through the
// real CLI parser with the flags an operator would use for this pair of homeservers.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Homeserver } from "../../../scripts/homeservers.ts";
import { parseCli } from "../../../src/config/config.ts";
import { createLogger, type Level } from "../../../src/observe/log.ts";
import { startProxy, type RunningProxy } from "../../../src/commands/serve.ts";

export interface ProxyOptions {
  /** Extra flags, e.g. `["--retry-initial-ms", "1000"]`; later flags win. */
  extra?: string[];
  /** Reuse a data dir (a restarted proxy keeps its durable state); a fresh one otherwise. */
  dataDir?: string;
  logLevel?: Level;
  /** Where the proxy's JSON log lines go besides `logs` (e.g. a file, or nowhere). */
  onLog?: (line: string) => void;
}

export interface Hs1Proxy {
  url: string;
  running: RunningProxy;
  dataDir: string;
  /** Every log line the proxy wrote, parsed. */
  logs: Record<string, unknown>[];
  close(): Promise<void>;
}

/** What the proxy needs to know of the homeserver it fronts (hs1, or the old Synapse). */
export type Fronted = Pick<Homeserver, "clientUrl" | "serverName" | "signingKeyPath">;

/** The command-line flags for a proxy in front of `hs1`. */
export function hs1ProxyFlags(hs1: Fronted, caPath: string, dataDir: string): string[] {
  return [
    "--upstream",
    hs1.clientUrl,
    "--server-name",
    hs1.serverName,
    "--signing-key",
    hs1.signingKeyPath,
    "--federation-ca",
    caPath,
    // hs2 is "localhost:8482": system DNS answers with loopback, which the private-address
    // guard refuses unless explicitly allowed (docs/architecture.md "Federation").
    "--federation-allow-cidrs",
    "127.0.0.0/8,::1/128",
    "--listen",
    "127.0.0.1:0",
    "--data-dir",
    dataDir,
  ];
}

export async function startHs1Proxy(hs1: Fronted, caPath: string, opts: ProxyOptions = {}): Promise<Hs1Proxy> {
  const ownDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), "e2e-proxy-")));
  const action = parseCli([...hs1ProxyFlags(hs1, caPath, dataDir), ...(opts.extra ?? [])], {});
  if (action.kind !== "run") throw new Error(`unexpected CLI action ${action.kind}`);
  const logs: Record<string, unknown>[] = [];
  const logger = createLogger(opts.logLevel ?? "info", (line) => {
    for (const l of line.split("\n")) if (l.trim()) logs.push(JSON.parse(l) as Record<string, unknown>);
    opts.onLog?.(line);
  });
  const running = await startProxy(action.config, logger);
  const port = Number(running.address.split(":").pop());
  return {
    url: `http://127.0.0.1:${port}`,
    running,
    dataDir,
    logs,
    async close() {
      await running.close(2_000);
      if (ownDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export interface RefreshAnswer {
  status: number;
  body: Record<string, unknown>;
}

/** POST …/user/{userId}/devices/refresh through the proxy (MSC2638), as the token's owner. */
export async function refreshDevices(proxyUrl: string, accessToken: string, userId: string): Promise<RefreshAnswer> {
  const res = await fetch(`${proxyUrl}/_matrix/client/v3/user/${encodeURIComponent(userId)}/devices/refresh`, {
    method: "POST",
    headers: { authorization: `Bearer ${accessToken}`, "content-type": "application/json" },
    body: "{}",
    signal: AbortSignal.timeout(60_000),
  });
  const text = await res.text();
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { text };
  }
  return { status: res.status, body };
}
