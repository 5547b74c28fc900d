// A real Matrix client: matrix-js-sdk 37.5.0 with its Rust crypto (WebAssembly), running its
// own sync loop against a base URL (the proxy). Its log goes to memory, shown on failure.
import { LoggerLevel, Tracing } from "@matrix-org/matrix-sdk-crypto-wasm";
import * as sdk from "matrix-js-sdk";
import { logger as sdkRootLogger, type Logger } from "matrix-js-sdk/lib/logger.js";
import type { Session } from "./client.ts";

/** A to-device event in a /sync answer, and when that answer reached the client. */
export interface ToDeviceArrival {
  /** Date.now() when the SDK's fetch of /sync resolved (the answer's head was in). */
  at: number;
  sender: string;
  type: string;
}

export interface SdkClient {
  client: sdk.MatrixClient;
  /** The SDK's own log lines (warn and error always; the rest when `verbose`). */
  logs: string[];
  /** Every to-device event the client's /sync answers carried, in order (type and sender only). */
  toDeviceArrivals: ToDeviceArrival[];
  /** A user's device ids as the client's crypto store has them; none for an untracked user (no download). */
  knownDeviceIds(userId: string): Promise<string[]>;
  stop(): void;
}

function memoryLogger(lines: string[], verbose: boolean, prefix = ""): Logger {
  const keep =
    (level: string, always: boolean) =>
    (...msg: unknown[]) => {
      if (!always && !verbose) return;
      lines.push(
        `${level} ${prefix}${msg.map((m) => (m instanceof Error ? m.message : typeof m === "string" ? m : JSON.stringify(m))).join(" ")}`,
      );
      if (lines.length > 5_000) lines.splice(0, 1_000);
    };
  return {
    trace: keep("trace", false),
    debug: keep("debug", false),
    info: keep("info", false),
    warn: keep("warn", true),
    error: keep("error", true),
    getChild: (ns: string) => memoryLogger(lines, verbose, `${prefix}${ns} `),
  };
}

/**
 * The SDK's module-level logger (sync loop, timings) and the Rust crypto's tracing (which
 * initRustCrypto turns on at Debug) write to the console; keep warnings and errors only.
 */
function quietGlobalLogs(): void {
  (sdkRootLogger as unknown as { setLevel(level: string): void }).setLevel("warn");
  new Tracing(LoggerLevel.Warn).turnOn();
}

/**
 * The SDK's fetch, noting the to-device events of each /sync answer and the moment the answer
 * reached the client: a test can time what follows from then on, not from when it looked.
 */
function syncWatchingFetch(arrivals: ToDeviceArrival[]): typeof globalThis.fetch {
  return (async (input: RequestInfo | URL, init?: RequestInit) => {
    const res = await globalThis.fetch(input, init);
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    if (!new URL(url).pathname.endsWith("/sync") || !res.ok) return res;
    const at = Date.now();
    // A copy of the body: the SDK reads the original as usual.
    res
      .clone()
      .json()
      .then((body: { to_device?: { events?: { sender?: unknown; type?: unknown }[] } }) => {
        for (const ev of body.to_device?.events ?? [])
          arrivals.push({ at, sender: String(ev.sender), type: String(ev.type) });
      })
      .catch(() => {}); // an aborted sync: nothing arrived
    return res;
  }) as typeof globalThis.fetch;
}

/** Starts `session`'s client against `baseUrl` and resolves once its first sync is done. */
export async function startSdkClient(
  session: Session,
  baseUrl: string,
  opts: { verbose?: boolean; timeoutMs?: number } = {},
): Promise<SdkClient> {
  const logs: string[] = [];
  const toDeviceArrivals: ToDeviceArrival[] = [];
  const client = sdk.createClient({
    baseUrl,
    fetchFn: syncWatchingFetch(toDeviceArrivals),
    accessToken: session.accessToken,
    userId: session.userId,
    deviceId: session.deviceId,
    logger: memoryLogger(logs, opts.verbose ?? false),
  });
  // Node, Bun and Deno have no IndexedDB: keep the crypto store in memory (37.5.0's option).
  await client.initRustCrypto({ useIndexedDB: false });
  if (!opts.verbose) quietGlobalLogs();
  const prepared = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () =>
        reject(
          new Error(`no first sync within ${opts.timeoutMs ?? 60_000} ms; SDK log:\n${logs.slice(-30).join("\n")}`),
        ),
      opts.timeoutMs ?? 60_000,
    );
    const onSync = (state: sdk.SyncState) => {
      if (state !== sdk.SyncState.Prepared && state !== sdk.SyncState.Syncing) return;
      clearTimeout(timer);
      client.off(sdk.ClientEvent.Sync, onSync);
      resolve();
    };
    client.on(sdk.ClientEvent.Sync, onSync);
  });
  await client.startClient({ initialSyncLimit: 1 });
  await prepared;
  return {
    client,
    logs,
    toDeviceArrivals,
    async knownDeviceIds(userId) {
      const crypto = client.getCrypto();
      if (!crypto) throw new Error("the client has no crypto");
      // downloadUncached = false (the default): only what the client already tracks.
      const map = await crypto.getUserDeviceInfo([userId], false);
      return [...(map.get(userId)?.keys() ?? [])].sort();
    },
    stop() {
      client.stopClient();
    },
  };
}
