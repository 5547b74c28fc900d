// The world of the replica tests (docs/scaling.md): a throw-away PostgreSQL, the fake homeserver
// and two fake remote homeservers, three compiled replicas on one database, and nginx in front
// of them with the block from docs/scaling.md. Everything on loopback, reached over sockets.
import type { IncomingMessage, ServerResponse } from "node:http";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { keyDocument } from "../../scripts/bench/binary.ts";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { startFakeRemote, type FakeRemote } from "../helpers/fake-remote.ts";
import { call, type CallAnswer } from "../helpers/http-call.ts";
import { startPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { type Replica, startReplicas, stopReplicas } from "../helpers/replicas.ts";
import { type NginxFront, startScalingNginx } from "../helpers/scaling-nginx.ts";
import { createTestCa, type TestCa } from "../helpers/tls.ts";
import { OUR_KEY_ID, OUR_PUBLIC_KEY } from "../helpers/world.ts";

export interface ReplicaWorld {
  pg: TestPostgres;
  database: string;
  hs: FakeHomeserver;
  /** The remote most tests use, and a second destination for the retry tests (its backoff is its own). */
  remote: FakeRemote;
  remote2: FakeRemote;
  ca: TestCa;
  replicas: Replica[];
  nginx: NginxFront;
  /** A local user's device; returns its access token. */
  login(localpart: string, deviceId?: string): string;
  refresh(port: number, userId: string, token: string): Promise<CallAnswer>;
  sync(port: number, token: string, since?: string, timeout?: number): Promise<CallAnswer>;
  keysQuery(port: number, token: string, users: string[]): Promise<CallAnswer>;
  close(): Promise<void>;
}

/**
 * The homeserver's /keys/query answer: what `hsDevices` says it has for each user (by default
 * nothing: a stale homeserver that never heard of the remote user's devices).
 */
export type HsDevices = Map<string, Record<string, unknown>>;

export async function startReplicaWorld(
  o: { extra?: string[]; replicas?: number } = {},
): Promise<ReplicaWorld & { hsDevices: HsDevices }> {
  const pg = await startPostgres();
  const database = await pg.createDatabase("replicas");
  const ca = createTestCa();
  const dir = mkdtempSync(join(tmpdir(), "replica-world-"));
  const caPath = join(dir, "ca.pem");
  writeFileSync(caPath, ca.caPem);
  const hs = await startFakeHomeserver("hs.test");
  const trusted = { "hs.test": { [OUR_KEY_ID]: OUR_PUBLIC_KEY } };
  const remote = await startFakeRemote({ ca, trustedKeys: trusted });
  const remote2 = await startFakeRemote({ ca, trustedKeys: trusted });
  // hs.test publishes our signing key, so the replicas' start-up key check (part of /readyz) passes.
  const keyDoc = keyDocument("hs.test");
  hs.on("/_matrix/key/v2/server", (_req, res) => {
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(keyDoc) });
    res.end(keyDoc);
  });
  const hsDevices: HsDevices = new Map();
  let batch = 0;
  // /sync: a fresh position per answer; a long-poll is held for its timeout (or until the
  // proxy gives up on it), as a homeserver with nothing new would.
  hs.on("/_matrix/client/v3/sync", (req: IncomingMessage, res: ServerResponse) => {
    const q = new URL(req.url!, "http://x").searchParams;
    const answer = () => {
      if (res.writableEnded || res.destroyed) return;
      const body = JSON.stringify({ next_batch: `s${++batch}`, rooms: {} });
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
    };
    const timeout = Number(q.get("timeout") ?? 0);
    if (timeout > 0) {
      const t = setTimeout(answer, timeout);
      res.once("close", () => clearTimeout(t));
    } else answer();
  });
  hs.on("/_matrix/client/v3/keys/query", (_req, res, body) => {
    const asked = Object.keys((JSON.parse(body.toString() || "{}") as { device_keys?: object }).device_keys ?? {});
    const out = JSON.stringify({
      device_keys: Object.fromEntries(asked.map((u) => [u, hsDevices.get(u) ?? {}])),
      failures: {},
    });
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(out) });
    res.end(out);
  });
  const replicas = await startReplicas(o.replicas ?? 3, {
    database,
    upstream: hs.url,
    caPath,
    extra: o.extra ?? [],
  });
  const nginx = await startScalingNginx(
    replicas.map((r) => r.port),
    hs.port,
  );
  return {
    pg,
    database,
    hs,
    remote,
    remote2,
    ca,
    replicas,
    nginx,
    hsDevices,
    login(localpart, deviceId = `${localpart.toUpperCase()}DEV`) {
      const token = `token_${localpart}_${deviceId}`;
      hs.tokens.set(token, [`@${localpart}:hs.test`, deviceId]);
      return token;
    },
    refresh: (port, userId, token) =>
      call(port, "POST", `/_matrix/client/v3/user/${encodeURIComponent(userId)}/devices/refresh`, {
        token,
        body: {},
        timeoutMs: 120_000,
      }),
    sync: (port, token, since, timeout = 0) =>
      call(
        port,
        "GET",
        `/_matrix/client/v3/sync?timeout=${timeout}${since ? `&since=${encodeURIComponent(since)}` : ""}`,
        {
          token,
          timeoutMs: 120_000,
        },
      ),
    keysQuery: (port, token, users) =>
      call(port, "POST", "/_matrix/client/v3/keys/query", {
        token,
        body: { device_keys: Object.fromEntries(users.map((u) => [u, []])) },
      }),
    async close() {
      await nginx.stop();
      await stopReplicas(replicas);
      await Promise.all([remote.close(), remote2.close(), hs.close()]);
      await pg.close();
      ca.cleanup();
    },
  };
}

/** The users a /sync answer (or a failed one: none) put in device_lists.changed. */
export const changedIn = (a: CallAnswer): string[] =>
  ((a.json?.device_lists as { changed?: string[] } | undefined)?.changed ?? []).slice();

/** How many requests nginx's access log shows each replica port serving, for `pathPart`. */
export function servedBy(nginx: NginxFront, replicas: Replica[], pathPart: string): number[] {
  const lines = nginx
    .accessLog()
    .split("\n")
    .filter((l) => l.includes(pathPart));
  // "$status $method $upstream_addr $upstream_status $uri": the last address tried answered.
  const last = (l: string) =>
    l
      .split(" ")
      .map((t) => /^127\.0\.0\.1:(\d+),?$/.exec(t)?.[1])
      .filter(Boolean)
      .at(-1);
  return replicas.map((r) => lines.filter((l) => last(l) === String(r.port)).length);
}

/** Where each replica's log stands now: `storeFailures` then reads only what came after. */
export const logMarks = (replicas: Replica[]): number[] => replicas.map((r) => r.log().length);

/**
 * Each replica's distinct store and cluster failure log lines (operation and error) since `marks`
 * (default: since it started): why it answered 503.
 */
export function storeFailures(replicas: Replica[], marks?: number[]): string[] {
  const out = new Set<string>();
  for (const [i, r] of replicas.entries())
    for (const line of r
      .log()
      .slice(marks?.[i] ?? 0)
      .split("\n")) {
      if (!/"msg":"((store|cluster) failure|PostgreSQL is not reachable)/.test(line)) continue;
      const op = /"operation":"([^"]*)"/.exec(line)?.[1];
      const err = /"error":"([^"]*)"/.exec(line)?.[1];
      out.add(`${r.name}: ${op} ${err}`);
    }
  return [...out];
}
