// A fake remote homeserver over HTTPS on loopback: it checks every request's X-Matrix
// signature with the independent verifier (xmatrix-check.ts), serves programmable device
// lists and profiles, and can fail, hang, hold or send garbage on demand. It records every
// request and tracks how many are in flight, for single-flight and concurrency tests.
//
// Like Synapse, it answers the device query for an unknown user of its own server with 200
// and an empty list, and the profile query for that user with 404 M_NOT_FOUND.
import { Buffer } from "node:buffer";
import type { IncomingHttpHeaders, ServerResponse } from "node:http";
import { type SeenRequest, startHttpsServer, type TestCa } from "./tls.ts";
import { devicesAnswer, type FakeUser } from "./fake-devices.ts";
import { verifyXMatrixRequest, type XMatrixKeys } from "./xmatrix-check.ts";

export type Endpoint = "devices" | "profile" | "other";

export type Behaviour =
  | { kind: "serve" }
  | { kind: "status"; status: number; body?: unknown; headers?: Record<string, string> }
  | { kind: "raw"; status?: number; body: string | Uint8Array; contentType?: string }
  | { kind: "hang" };

export interface RemoteRequest {
  method: string;
  /** The raw request target as received. */
  url: string;
  endpoint: Endpoint;
  /** The user the request was about (decoded), when there is one. */
  userId?: string;
  host: string | undefined;
  servername: string | null;
  headers: IncomingHttpHeaders;
  authorized: boolean;
  /** Why X-Matrix verification failed, if it did. */
  reason?: string;
  /** The client's TCP port (see tls.ts). */
  remotePort?: number;
  origin?: string;
}

export interface FakeRemoteOptions {
  ca: TestCa;
  /** Loopback address to bind; default 127.0.0.1. */
  host?: string;
  /** Extra DNS names for the certificate, for hostname server names. */
  dnsNames?: string[];
  /** Default: the IP literal with the bound port, e.g. "127.0.0.1:41234". */
  serverName?: string;
  /** Origin keys accepted in X-Matrix: {origin: {"ed25519:v": pub}}. */
  trustedKeys?: XMatrixKeys;
}

export interface FakeRemote {
  host: string;
  port: number;
  /** The destination the fake expects in X-Matrix, and the server part of its users. */
  serverName: string;
  requests: RemoteRequest[];
  readonly inFlight: number;
  readonly maxInFlight: number;
  /** Forget recorded requests and restart maxInFlight from the current inFlight. */
  resetStats(): void;
  trustKey(origin: string, keyId: string, pub: string): void;
  setUser(user: FakeUser): void;
  /** Serve this exact body (any JSON) for the user's device query. */
  setAnswer(userId: string, body: unknown): void;
  removeUser(userId: string): void;
  /** Override responses; scoped to a user and/or endpoint when given. Later calls win. */
  setBehaviour(b: Behaviour, scope?: { userId?: string; endpoint?: Endpoint }): void;
  clearBehaviours(): void;
  /** Park matching requests (counted in flight) until release(); then they are answered normally. */
  hold(scope?: { userId?: string; endpoint?: Endpoint }): { release(): void };
  /** Authorized requests received, optionally only those matching a user and/or endpoint. */
  count(filter?: { userId?: string; endpoint?: Endpoint }): number;
  waitFor(predicate: () => boolean, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

type Scope = { userId?: string; endpoint?: Endpoint };
const matches = (s: Scope, r: RemoteRequest): boolean =>
  (s.userId === undefined || s.userId === r.userId) && (s.endpoint === undefined || s.endpoint === r.endpoint);

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(text)),
    ...headers,
  });
  res.end(text);
}

function classify(url: string): { endpoint: Endpoint; userId?: string } {
  const [path = "", query = ""] = url.split("?", 2);
  const prefix = "/_matrix/federation/v1/user/devices/";
  try {
    if (path.startsWith(prefix) && !path.slice(prefix.length).includes("/")) {
      return { endpoint: "devices", userId: decodeURIComponent(path.slice(prefix.length)) };
    }
    if (path === "/_matrix/federation/v1/query/profile") {
      const userId = new URLSearchParams(query).get("user_id");
      return userId === null ? { endpoint: "profile" } : { endpoint: "profile", userId };
    }
  } catch {
    // a malformed escape: treat as an unknown endpoint
  }
  return { endpoint: "other" };
}

export async function startFakeRemote(opts: FakeRemoteOptions): Promise<FakeRemote> {
  const host = opts.host ?? "127.0.0.1";
  const keys: XMatrixKeys = structuredClone(opts.trustedKeys ?? {});
  const users = new Map<string, FakeUser>();
  const answers = new Map<string, unknown>();
  const behaviours: { scope: Scope; b: Behaviour }[] = [];
  const holds: { scope: Scope; waiting: (() => void)[]; released: boolean }[] = [];
  const requests: RemoteRequest[] = [];
  let inFlight = 0;
  let maxInFlight = 0;

  function answer(r: RemoteRequest, res: ServerResponse): void {
    const override = [...behaviours].reverse().find((x) => matches(x.scope, r))?.b;
    if (override?.kind === "hang") return; // the socket is destroyed by close()
    if (override?.kind === "status")
      return send(
        res,
        override.status,
        override.body ?? { errcode: "M_UNKNOWN", error: "fake failure" },
        override.headers,
      );
    if (override?.kind === "raw") {
      const body = typeof override.body === "string" ? Buffer.from(override.body) : Buffer.from(override.body);
      res.writeHead(override.status ?? 200, {
        "content-type": override.contentType ?? "application/json",
        "content-length": String(body.length),
      });
      return void res.end(body);
    }
    if (r.endpoint === "other") return send(res, 404, { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" });
    if (r.userId === undefined) return send(res, 400, { errcode: "M_MISSING_PARAM", error: "Missing user_id" });
    // Synapse: SynapseError(400, "User is not hosted on this homeserver").
    if (r.userId.slice(r.userId.indexOf(":") + 1) !== remote.serverName) {
      return send(res, 400, { errcode: "M_UNKNOWN", error: "User is not hosted on this homeserver" });
    }
    const user = users.get(r.userId);
    if (r.endpoint === "profile") {
      if (!user && !answers.has(r.userId))
        return send(res, 404, { errcode: "M_NOT_FOUND", error: "Profile was not found" });
      return send(res, 200, user?.displayname === undefined ? {} : { displayname: user.displayname });
    }
    if (answers.has(r.userId)) return send(res, 200, answers.get(r.userId));
    if (user) return send(res, 200, devicesAnswer(user));
    send(res, 200, { user_id: r.userId, stream_id: 0, devices: [], master_key: null, self_signing_key: null });
  }

  async function handle(seen: SeenRequest, res: ServerResponse): Promise<void> {
    const { endpoint, userId } = classify(seen.url);
    const check = verifyXMatrixRequest({
      method: seen.method,
      rawTarget: seen.url,
      authorization: seen.headers.authorization,
      expectedDestination: remote.serverName,
      keys,
      body: seen.body,
    });
    const r: RemoteRequest = {
      method: seen.method,
      url: seen.url,
      endpoint,
      host: seen.host,
      servername: seen.servername,
      headers: seen.headers,
      authorized: check.ok,
    };
    if (userId !== undefined) r.userId = userId;
    if (seen.remotePort !== undefined) r.remotePort = seen.remotePort;
    if (check.ok) r.origin = check.origin;
    else r.reason = check.reason;
    requests.push(r);
    // Like Synapse, /version needs no authentication (server-server-api §GET /_matrix/federation/v1/version).
    const open = seen.url === "/_matrix/federation/v1/version";
    if (!check.ok && !open) return send(res, 401, { errcode: "M_UNAUTHORIZED", error: check.reason });

    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      inFlight--;
    };
    res.once("finish", finish);
    res.once("close", finish);
    const hold = holds.find((h) => !h.released && matches(h.scope, r));
    if (hold) await new Promise<void>((resolve) => hold.waiting.push(resolve));
    if (res.destroyed || res.writableEnded) return finish();
    answer(r, res);
  }

  const server = await startHttpsServer({
    host,
    cert: opts.ca.issue(host, [`IP:${host}`, ...(opts.dnsNames ?? []).map((n) => `DNS:${n}`)]),
    handler: (seen, res) => void handle(seen, res),
  });

  const remote: FakeRemote = {
    host,
    port: server.port,
    serverName: opts.serverName ?? `${host.includes(":") ? `[${host}]` : host}:${server.port}`,
    requests,
    get inFlight() {
      return inFlight;
    },
    get maxInFlight() {
      return maxInFlight;
    },
    resetStats() {
      requests.splice(0);
      maxInFlight = inFlight;
    },
    trustKey(origin, keyId, pub) {
      (keys[origin] ??= {})[keyId] = pub;
    },
    setUser(user) {
      answers.delete(user.userId);
      users.set(user.userId, user);
    },
    setAnswer: (userId, body) => void answers.set(userId, body),
    removeUser(userId) {
      users.delete(userId);
      answers.delete(userId);
    },
    setBehaviour: (b, scope = {}) => void behaviours.push({ scope, b }),
    clearBehaviours: () => void behaviours.splice(0),
    hold(scope = {}) {
      const h = { scope, waiting: [] as (() => void)[], released: false };
      holds.push(h);
      return {
        release() {
          h.released = true;
          for (const w of h.waiting.splice(0)) w();
        },
      };
    },
    count: (filter = {}) => requests.filter((r) => r.authorized && matches(filter, r)).length,
    async waitFor(predicate, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (!predicate()) {
        if (Date.now() > deadline) throw new Error("fake remote: condition not reached in time");
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    async close() {
      for (const h of holds) for (const w of h.waiting.splice(0)) w();
      await server.close();
    },
  };
  return remote;
}
