// A fake homeserver client API over a real socket, for integration tests. It records every
// request exactly as it arrived (raw target, headers, body) and serves a small, stateful
// subset of the client-server API; tests override any path with `on(...)`.
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface SeenRequest {
  method: string;
  target: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
  remoteAddress: string;
}

type Override = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void | Promise<void>;

export interface FakeHomeserver {
  url: string;
  port: number;
  seen: SeenRequest[];
  /** Upstream request objects whose client side closed (aborted) before we answered. */
  closedEarly: string[];
  /** Serve paths starting with `pathPrefix` with `handler`; `raw` handlers get the body unread. */
  on(pathPrefix: string, handler: Override, opts?: { raw?: boolean }): void;
  /** Accept tokens: token -> [user_id, device_id]. */
  tokens: Map<string, [string, string]>;
  close(): Promise<void>;
}

export async function startFakeHomeserver(serverName = "hs.test"): Promise<FakeHomeserver> {
  const seen: SeenRequest[] = [];
  const closedEarly: string[] = [];
  const overrides: [string, Override, boolean][] = [];
  const tokens = new Map<string, [string, string]>();
  const users = new Map<string, string>(); // user_id -> password
  const events: unknown[] = [];
  let tokenCount = 0;
  let waiters: (() => void)[] = [];

  const json = (res: ServerResponse, status: number, body: unknown) => {
    const s = JSON.stringify(body);
    res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(s) });
    res.end(s);
  };
  const auth = (req: IncomingMessage): [string, string] | undefined => {
    const h = req.headers.authorization;
    const token = h?.startsWith("Bearer ")
      ? h.slice(7)
      : new URL(req.url!, "http://x").searchParams.get("access_token");
    return token ? tokens.get(token) : undefined;
  };
  const login = (userId: string) => {
    const token = `tok_${++tokenCount}`;
    const deviceId = `DEV${tokenCount}`;
    tokens.set(token, [userId, deviceId]);
    return { user_id: userId, access_token: token, device_id: deviceId, home_server: serverName };
  };

  const server = http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    const target = req.url ?? "/";
    const override = overrides.find(([p]) => target.startsWith(p));
    res.on("close", () => {
      if (!res.writableFinished) closedEarly.push(target);
    });
    if (override?.[2]) {
      // a raw override reads (or ignores) the request body stream itself
      seen.push({
        method: req.method!,
        target,
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body: Buffer.alloc(0),
        remoteAddress: req.socket.remoteAddress ?? "",
      });
      return override[1](req, res, Buffer.alloc(0));
    }
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    seen.push({
      method: req.method!,
      target,
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      body,
      remoteAddress: req.socket.remoteAddress ?? "",
    });
    if (override) return override[1](req, res, body);

    const path = target.split("?")[0]!;
    const q = new URL(target, "http://x").searchParams;
    const parsed = body.length ? JSON.parse(body.toString()) : {};
    if (path === "/_matrix/client/versions")
      return json(res, 200, { versions: ["r0.6.1", "v1.11"], unstable_features: { "org.example.other": true } });
    if (path === "/_matrix/client/v3/register") {
      const userId = `@${parsed.username}:${serverName}`;
      if (users.has(userId)) return json(res, 400, { errcode: "M_USER_IN_USE", error: "taken" });
      users.set(userId, parsed.password);
      return json(res, 200, login(userId));
    }
    if (path === "/_matrix/client/v3/login") {
      const userId = `@${parsed.identifier?.user}:${serverName}`;
      if (users.get(userId) !== parsed.password)
        return json(res, 403, { errcode: "M_FORBIDDEN", error: "bad password" });
      return json(res, 200, login(userId));
    }
    const who = auth(req);
    if (!who) return json(res, 401, { errcode: "M_UNKNOWN_TOKEN", error: "Unknown token", soft_logout: false });
    if (path === "/_matrix/client/v3/account/whoami") return json(res, 200, { user_id: who[0], device_id: who[1] });
    if (path === "/_matrix/client/v3/devices") {
      const mine = [...tokens.values()].filter(([u]) => u === who[0]).map(([, d]) => ({ device_id: d }));
      return json(res, 200, { devices: mine });
    }
    if (path.startsWith("/_matrix/client/v3/rooms/") && req.method === "PUT") {
      events.push({ type: "m.room.message", sender: who[0], content: parsed });
      const w = waiters;
      waiters = [];
      w.forEach((f) => f());
      return json(res, 200, { event_id: `$ev${events.length}` });
    }
    if (path === "/_matrix/client/v3/sync") {
      const since = Number(q.get("since") ?? "0");
      const timeout = Number(q.get("timeout") ?? "0");
      const answer = () =>
        json(res, 200, { next_batch: String(events.length), rooms: { join: {} }, timeline: events.slice(since) });
      if (events.length > since || timeout === 0) return answer();
      const t = setTimeout(answer, timeout);
      waiters.push(() => {
        clearTimeout(t);
        answer();
      });
      return;
    }
    json(res, 404, { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" });
  });
  server.keepAliveTimeout = 60_000;
  server.requestTimeout = 0;
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    seen,
    closedEarly,
    tokens,
    on: (prefix, handler, opts) => void overrides.unshift([prefix, handler, opts?.raw ?? false]),
    close: () =>
      new Promise((r) => {
        server.closeAllConnections?.();
        server.close(() => r());
      }),
  };
}
