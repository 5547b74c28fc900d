// A minimal Matrix client over real HTTP (client-server API v3), enough to set up the
// scenarios the e2e tests need. Every call goes to `clientUrl`, which may be a
// homeserver or a proxy in front of it.
import { setTimeout as sleep } from "node:timers/promises";

export interface Session {
  clientUrl: string;
  userId: string;
  accessToken: string;
  deviceId: string;
  /** Kept so a test can log in again (new device) or pass user-interactive auth. */
  password: string;
}

export class MatrixHttpError extends Error {
  readonly status: number;
  readonly body: unknown;
  constructor(method: string, path: string, status: number, body: unknown) {
    super(`${method} ${path} → ${status} ${JSON.stringify(body)}`);
    this.status = status;
    this.body = body;
  }
}

export interface CallOptions {
  token?: string;
  body?: unknown;
  /** Statuses that are returned instead of thrown (e.g. 401 during user-interactive auth). */
  allow?: number[];
}

export async function call<T = Record<string, unknown>>(
  clientUrl: string,
  method: string,
  path: string,
  opts: CallOptions = {},
): Promise<{ status: number; body: T }> {
  const headers: Record<string, string> = {};
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${clientUrl}${path}`, {
    method,
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    signal: AbortSignal.timeout(60_000),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // keep text: a non-JSON answer is worth seeing in the error
  }
  if (res.status >= 400 && !opts.allow?.includes(res.status)) throw new MatrixHttpError(method, path, res.status, body);
  return { status: res.status, body: body as T };
}

/** Calls as `s`, returning the body; throws on any error status. */
export async function api<T = Record<string, unknown>>(
  s: Session,
  method: string,
  path: string,
  body?: unknown,
): Promise<T> {
  return (await call<T>(s.clientUrl, method, path, { token: s.accessToken, body })).body;
}

interface LoginAnswer {
  user_id: string;
  access_token: string;
  device_id: string;
}

/** Registers `username` (dummy auth: `enable_registration_without_verification`). */
export async function register(
  clientUrl: string,
  username: string,
  password = `pw-${username}-e2e`,
  deviceId?: string,
): Promise<Session> {
  const request = {
    username,
    password,
    device_id: deviceId,
    initial_device_display_name: `${username}'s first device`,
  };
  // Registration is user-interactive (client-server API §User-interactive authentication):
  // the first request answers 401 with a session, the second completes m.login.dummy.
  const first = await call<{ session?: string } & Partial<LoginAnswer>>(
    clientUrl,
    "POST",
    "/_matrix/client/v3/register",
    { body: request, allow: [401] },
  );
  let answer = first.body;
  if (first.status === 401) {
    answer = (
      await call<LoginAnswer>(clientUrl, "POST", "/_matrix/client/v3/register", {
        body: { ...request, auth: { type: "m.login.dummy", session: first.body.session } },
      })
    ).body;
  }
  if (!answer.user_id || !answer.access_token || !answer.device_id)
    throw new Error(`register ${username}: ${JSON.stringify(answer)}`);
  return { clientUrl, userId: answer.user_id, accessToken: answer.access_token, deviceId: answer.device_id, password };
}

/** Logs in again as `userId`: a new device. */
export async function login(
  clientUrl: string,
  userId: string,
  password: string,
  deviceName = "e2e login",
): Promise<Session> {
  const { body } = await call<LoginAnswer>(clientUrl, "POST", "/_matrix/client/v3/login", {
    body: {
      type: "m.login.password",
      identifier: { type: "m.id.user", user: userId },
      password,
      initial_device_display_name: deviceName,
    },
  });
  return { clientUrl, userId: body.user_id, accessToken: body.access_token, deviceId: body.device_id, password };
}

/** A private, encrypted room (encryption makes clients track members' device lists). */
export async function createRoom(s: Session, invite: string[] = []): Promise<string> {
  const { room_id } = await api<{ room_id: string }>(s, "POST", "/_matrix/client/v3/createRoom", {
    preset: "private_chat",
    invite,
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
  });
  return room_id;
}

export async function invite(s: Session, roomId: string, userId: string): Promise<void> {
  await api(s, "POST", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/invite`, { user_id: userId });
}

export async function join(s: Session, roomId: string, via: string[] = []): Promise<void> {
  const query = via.map((v) => `server_name=${encodeURIComponent(v)}`).join("&");
  await api(s, "POST", `/_matrix/client/v3/join/${encodeURIComponent(roomId)}${query ? `?${query}` : ""}`, {});
}

export async function joinedMembers(s: Session, roomId: string): Promise<string[]> {
  const { joined } = await api<{ joined: Record<string, unknown> }>(
    s,
    "GET",
    `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/joined_members`,
  );
  return Object.keys(joined);
}

export interface KeysQueryAnswer {
  device_keys: Record<string, Record<string, Record<string, unknown>>>;
  master_keys?: Record<string, Record<string, unknown>>;
  self_signing_keys?: Record<string, Record<string, unknown>>;
  user_signing_keys?: Record<string, Record<string, unknown>>;
  failures?: Record<string, unknown>;
}

export async function keysQuery(s: Session, users: string[] | Record<string, string[]>): Promise<KeysQueryAnswer> {
  const device_keys = Array.isArray(users) ? Object.fromEntries(users.map((u) => [u, []])) : users;
  return api<KeysQueryAnswer>(s, "POST", "/_matrix/client/v3/keys/query", { device_keys, timeout: 10_000 });
}

/** Device ids that `s`'s homeserver reports for `userId` in /keys/query, sorted. */
export async function queriedDeviceIds(s: Session, userId: string): Promise<string[]> {
  return Object.keys((await keysQuery(s, [userId])).device_keys[userId] ?? {}).sort();
}

export interface SyncAnswer {
  next_batch: string;
  device_lists?: { changed?: string[]; left?: string[] };
  rooms?: { join?: Record<string, unknown>; invite?: Record<string, unknown> };
}

export async function sync(s: Session, since?: string, timeoutMs = 0): Promise<SyncAnswer> {
  const params = new URLSearchParams({ timeout: String(timeoutMs) });
  if (since) params.set("since", since);
  return api<SyncAnswer>(s, "GET", `/_matrix/client/v3/sync?${params}`);
}

/** Polls `probe` until it returns a value other than undefined, or throws naming `what`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 60_000,
  intervalMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    await sleep(intervalMs);
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${String(lastError)})` : ""}`,
  );
}
