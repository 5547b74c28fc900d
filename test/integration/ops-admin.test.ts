// The admin API on the ops listener: homeserver admins only (checked with the homeserver),
// and its actions really reach the federation remote.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { startWorld, type World } from "../helpers/world.ts";
import { json, playSynapseAdmin } from "./ops-helpers.ts";

let w: World;
let root: string; // a homeserver admin
let alice: string; // not an admin
const admins = new Set(["@root:hs.test"]);
const user = (name: string) => `@${name}:${w.remote.serverName}`;
const admin = (path: string, init: { method?: string; token?: string } = {}) =>
  fetch(`http://${w.proxy.opsAddress}/_resync/admin/v1/${path}`, {
    method: init.method ?? "POST",
    headers: init.token ? { authorization: `Bearer ${init.token}` } : {},
  });
const refreshPath = (u: string) => `users/${encodeURIComponent(u)}/refresh`;

beforeAll(async () => {
  w = await startWorld([
    "--metrics-listen",
    "127.0.0.1:0",
    "--retry-initial-ms",
    "600000",
    "--retry-max-ms",
    "600000",
    "--rate-target-burst",
    "100",
  ]);
  root = w.login("root");
  alice = w.login("alice");
  playSynapseAdmin(w.hs, admins);
  w.hs.on("/_matrix/client/v3/keys/query", (_req, res, body) => {
    const wanted = Object.keys(JSON.parse(body.toString()).device_keys ?? {});
    json(res, 200, { device_keys: Object.fromEntries(wanted.map((u) => [u, {}])), failures: {} });
  });
});
afterAll(() => w.close());

describe("who may call it", () => {
  test("no token → 401 M_MISSING_TOKEN; an unknown token → the homeserver's own 401", async () => {
    const none = await admin(refreshPath(user("x")));
    expect(none.status).toBe(401);
    expect((await none.json()).errcode).toBe("M_MISSING_TOKEN");
    const bad = await admin(refreshPath(user("x")), { token: "nope" });
    expect(bad.status).toBe(401);
    expect(await bad.json()).toEqual({ errcode: "M_UNKNOWN_TOKEN", error: "Unknown token", soft_logout: false });
  });

  test("a non-admin token → 403 M_FORBIDDEN on every endpoint, and nothing is fetched", async () => {
    w.remote.setUser(makeUser(user("guarded")));
    for (const [path, method] of [
      [refreshPath(user("guarded")), "POST"],
      [`servers/${w.remote.serverName}/refresh`, "POST"],
      ["retries", "GET"],
      ["backoffs", "GET"],
    ] as const) {
      const res = await admin(path, { method, token: alice });
      expect(res.status).toBe(403);
      expect((await res.json()).errcode).toBe("M_FORBIDDEN");
    }
    expect(w.remote.count({ userId: user("guarded") })).toBe(0);
    expect(
      w.hs.seen.some((r) => r.target === `/_synapse/admin/v1/users/${encodeURIComponent("@alice:hs.test")}/admin`),
    ).toBe(true);
  });

  test("rights are asked of the homeserver each time: a demoted admin is refused at once", async () => {
    const temp = w.login("temp");
    admins.add("@temp:hs.test");
    expect((await admin("retries", { method: "GET", token: temp })).status).toBe(200);
    admins.delete("@temp:hs.test");
    expect((await admin("retries", { method: "GET", token: temp })).status).toBe(403);
  });

  test("an admin token the homeserver revoked gets the homeserver's own 401 at once, not a cached identity", async () => {
    const gone = w.login("gone");
    admins.add("@gone:hs.test");
    expect((await admin("retries", { method: "GET", token: gone })).status).toBe(200);
    w.hs.tokens.delete(gone);
    const res = await admin("retries", { method: "GET", token: gone });
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ errcode: "M_UNKNOWN_TOKEN", error: "Unknown token", soft_logout: false });
  });

  test("a homeserver without Synapse's admin API (404) → 403, never allowed by default", async () => {
    const hsOther = w.login("other");
    admins.add("@other:hs.test");
    w.hs.on(`/_synapse/admin/v1/users/${encodeURIComponent("@other:hs.test")}`, (_req, res) =>
      json(res, 404, { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" }),
    );
    const res = await admin("retries", { method: "GET", token: hsOther });
    expect(res.status).toBe(403);
    expect((await res.json()).error).toMatch(/answered 404/);
  });

  test("an answer of {admin: false} is a refusal too", async () => {
    const plain = w.login("plain");
    w.hs.on(`/_synapse/admin/v1/users/${encodeURIComponent("@plain:hs.test")}`, (_req, res) =>
      json(res, 200, { admin: false }),
    );
    const res = await admin("retries", { method: "GET", token: plain });
    expect(res.status).toBe(403);
    expect((await res.json()).errcode).toBe("M_FORBIDDEN");
  });

  test("the admin API is not served on the client listener", async () => {
    const res = await fetch(`${w.proxy.url}/_resync/admin/v1/retries`, {
      headers: { authorization: `Bearer ${root}` },
    });
    expect(w.hs.seen.at(-1)!.target).toBe("/_resync/admin/v1/retries"); // passed through, unhandled
    expect(res.status).toBe(404);
  });
});

describe("refresh a user", () => {
  test("fetches the list over federation now and reports it", async () => {
    const u = user("adminbob");
    w.remote.setUser(makeUser(u, { devices: 2 }));
    const res = await admin(refreshPath(u), { token: root });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ user_id: u, status: "ok", devices: 2 });
    expect(w.remote.count({ userId: u, endpoint: "devices" })).toBe(1);
    expect(Object.keys((await w.proxy.services.store.getSnapshot(u))!.devices).sort()).toEqual(["DEV0", "DEV1"]);
  });

  test("GET /heals lists it, newest first, with what changed and why; admins only", async () => {
    expect((await admin("heals", { method: "GET", token: alice })).status).toBe(403);
    const res = await admin("heals", { method: "GET", token: root });
    expect(res.status).toBe(200);
    const { heals } = (await res.json()) as { heals: Record<string, unknown>[] };
    expect(heals[0]).toMatchObject({ user_id: user("adminbob"), trigger: "admin", why: "asked by @root:hs.test" });
    expect(String(heals[0]!.changes)).toContain("2 devices");
    expect((await admin("heals", { method: "POST", token: root })).status).toBe(405);
  });

  test("bad input: invalid ids, a local user, unknown paths and methods", async () => {
    expect((await admin(refreshPath("not-a-user"), { token: root })).status).toBe(400);
    const local = await admin(refreshPath("@carol:hs.test"), { token: root });
    expect(local.status).toBe(400);
    expect((await local.json()).errcode).toBe("M_INVALID_PARAM");
    expect((await admin(refreshPath(user("x")), { method: "GET", token: root })).status).toBe(405);
    expect((await admin("nothing/here", { method: "GET", token: root })).status).toBe(404);
    expect((await admin("servers/hs.test/refresh", { token: root })).status).toBe(400);
    expect((await admin("servers/bad_name!/refresh", { token: root })).status).toBe(400);
  });
});

describe("refresh every user of a server", () => {
  test("refreshes every tracked user, at most 3 at a time, and reports progress", async () => {
    const users = Array.from({ length: 7 }, (_, i) => user(`fleet${i}`));
    for (const u of users) w.remote.setUser(makeUser(u));
    // Local devices query their keys through us: that is how the proxy knows whom to resync.
    const q = await fetch(`${w.proxy.url}/_matrix/client/v3/keys/query`, {
      method: "POST",
      headers: { authorization: `Bearer ${alice}` },
      body: JSON.stringify({ device_keys: Object.fromEntries(users.map((u) => [u, []])) }),
    });
    expect(q.status).toBe(200);
    const store = w.proxy.services.store;
    for (const u of users) expect(await store.trackedUsersOn(w.remote.serverName)).toContain(u);
    // Users with a snapshot there count too (adminbob, refreshed above).
    const known = [
      ...new Set([
        ...(await store.trackedUsersOn(w.remote.serverName)),
        ...(await store.listSnapshotUsers()).filter((u) => u.endsWith(`:${w.remote.serverName}`)),
      ]),
    ];
    expect(known).toContain(user("adminbob"));

    w.remote.resetStats();
    const held = w.remote.hold({ endpoint: "devices" });
    try {
      const res = await admin(`servers/${encodeURIComponent(w.remote.serverName)}/refresh`, { token: root });
      expect(res.status).toBe(202);
      const started = await res.json();
      expect(started).toMatchObject({ server: w.remote.serverName, status: "started", total: known.length });
      await w.remote.waitFor(() => w.remote.inFlight === 3);
      const again = await (
        await admin(`servers/${encodeURIComponent(w.remote.serverName)}/refresh`, { token: root })
      ).json();
      expect(again.status).toBe("already_running");
    } finally {
      held.release();
    }

    const progress = () =>
      admin(`servers/${encodeURIComponent(w.remote.serverName)}/refresh`, { method: "GET", token: root }).then((r) =>
        r.json(),
      );
    await expect.poll(progress, { timeout: 15_000 }).toMatchObject({ done: known.length, ok: known.length, failed: 0 });
    expect((await progress()).finished_at).toBeGreaterThan(0);
    for (const u of known) {
      expect(w.remote.count({ userId: u, endpoint: "devices" })).toBe(1);
      expect(await w.proxy.services.store.getSnapshot(u)).toBeDefined();
    }
    expect(w.remote.maxInFlight).toBe(3);
  });
});

// Last: these leave a retry entry and the remote in backoff.
describe("retries and backoffs", () => {
  test("a failing refresh → 502 with next_retry_in_ms, then listed under retries and backoffs", async () => {
    const u = user("broken");
    w.remote.setBehaviour({ kind: "status", status: 500 }, { userId: u });
    const res = await admin(refreshPath(u), { token: root });
    expect(res.status).toBe(502);
    const body = await res.json();
    expect(body).toMatchObject({ errcode: "M_UNKNOWN", remote_status: 500 });
    expect(body.next_retry_in_ms).toBeGreaterThan(0);

    const retries = await (await admin("retries", { method: "GET", token: root })).json();
    expect(retries.retries).toContainEqual(
      expect.objectContaining({ user_id: u, attempts: 1, requested_by: ["admin:@root:hs.test"] }),
    );
    const backoffs = await (await admin("backoffs", { method: "GET", token: root })).json();
    expect(backoffs.destinations).toContainEqual(
      expect.objectContaining({ destination: w.remote.serverName, failures: 1, in_backoff: true }),
    );
  });

  test("a server refresh clears an outage's backoff first; if the server fails again the rest wait for the retry queue", async () => {
    const server = w.remote.serverName;
    expect((await w.proxy.services.store.getBackoff(server))!.retryAt).toBeGreaterThan(Date.now());
    w.remote.clearBehaviours();
    w.remote.setBehaviour({ kind: "status", status: 503 }, { endpoint: "devices" }); // still down
    w.remote.resetStats();
    const res = await admin(`servers/${encodeURIComponent(server)}/refresh`, { token: root });
    expect(res.status).toBe(202);
    const total = (await res.json()).total;
    const progress = () =>
      admin(`servers/${encodeURIComponent(server)}/refresh`, { method: "GET", token: root }).then((r) => r.json());
    await expect.poll(async () => (await progress()).finished_at, { timeout: 15_000 }).toBeGreaterThan(0);
    const job = await progress();
    expect(job.done).toBe(total);
    expect(job.failed).toBeGreaterThanOrEqual(1);
    expect(job.failed).toBeLessThanOrEqual(3); // the first failures set a new backoff
    expect(job.deferred).toBe(total - job.failed);
    expect(w.remote.count({ endpoint: "devices" })).toBe(job.failed);
    const retried = new Set((await w.proxy.services.store.listRetries()).map((r) => r.userId));
    expect(retried.size).toBeGreaterThanOrEqual(total);
  });
});
