import { afterAll, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { startWorld, type World } from "../helpers/world.ts";

let w: World;
let alice: string;
const bob = () => `@bob:${w.remote.serverName}`;
const user = (name: string) => `@${name}:${w.remote.serverName}`;

beforeAll(async () => {
  w = await startWorld([
    "--retry-initial-ms",
    "300",
    "--retry-max-ms",
    "1000",
    "--refresh-cache-ms",
    "60000",
    "--probe-interval-ms",
    "60000",
  ]);
  alice = w.login("alice");
});
afterAll(() => w.close());
beforeEach(() => w.remote.clearBehaviours());

describe("routes", () => {
  test.each([
    ["/_matrix/client/v3", "POST"],
    ["/_matrix/client/r0", "POST"],
    ["/_matrix/client/unstable/org.matrix.msc2638", "POST"],
    ["/_matrix/unstable/org.matrix.msc2638/user/{u}/devices", "GET"],
    ["/_matrix/unstable/org.matrix.msc2638/user/{u}/devices", "POST"],
  ])("%s (%s) fetches the list over signed federation and answers 202 {}", async (prefix, method) => {
    const name = `r${Math.random().toString(36).slice(2, 8)}`;
    w.remote.setUser(makeUser(user(name), { devices: 2 }));
    const res = await w.refresh(user(name), w.login(name + "asker"), { prefix, method });
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({});
    expect(w.remote.count({ userId: user(name), endpoint: "devices" })).toBe(1);
    const req = w.remote.requests.find((r) => r.userId === user(name))!;
    expect(req.authorized).toBe(true); // the remote verified our X-Matrix signature itself
    expect(req.url).toBe(`/_matrix/federation/v1/user/devices/${encodeURIComponent(user(name))}`);
    expect((await w.proxy.services.store.getSnapshot(user(name)))?.devices).toHaveProperty("DEV1");
  });

  test("a trailing slash and a raw (unencoded) user id are accepted", async () => {
    w.remote.setUser(makeUser(user("slash")));
    const res = await fetch(`${w.proxy.url}/_matrix/client/v3/user/@slash:${w.remote.serverName}/devices/refresh/`, {
      method: "POST",
      headers: { authorization: `Bearer ${alice}` },
    });
    expect(res.status).toBe(202);
    expect(w.remote.count({ userId: user("slash") })).toBeGreaterThan(0);
  });

  test("CORS preflight on the refresh route", async () => {
    const res = await fetch(`${w.proxy.url}/_matrix/client/v3/user/%40x%3Ay/devices/refresh`, { method: "OPTIONS" });
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
  });

  test("a user on our own server needs no federation", async () => {
    const before = w.remote.requests.length;
    const res = await w.refresh("@carol:hs.test", alice);
    expect(res.status).toBe(202);
    expect(w.remote.requests.length).toBe(before);
  });
});

describe("errors", () => {
  test.each([
    "bob",
    "@bob",
    "@:example.org",
    "@bob:",
    "@bob:exa_mple.org",
    "@bob:a..b",
    "@bob:[::1",
    "@bob:host:99999",
    `@${"x".repeat(250)}:example.org`,
    "@bo:b:[zz]",
  ])("invalid user id %j → 400 M_INVALID_PARAM", async (id) => {
    const res = await w.refresh(id, alice);
    expect(res.status).toBe(400);
    expect((await res.json()).errcode).toBe("M_INVALID_PARAM");
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
  });

  test("a malformed percent-escape → 400 M_INVALID_PARAM", async () => {
    const res = await fetch(`${w.proxy.url}/_matrix/client/v3/user/%E0%A4%A/devices/refresh`, {
      method: "POST",
      headers: { authorization: `Bearer ${alice}` },
    });
    expect(res.status).toBe(400);
    expect((await res.json()).errcode).toBe("M_INVALID_PARAM");
  });

  test("no token → 401 M_MISSING_TOKEN; a bad token → the homeserver's own 401 body", async () => {
    const none = await fetch(`${w.proxy.url}/_matrix/client/v3/user/${encodeURIComponent(bob())}/devices/refresh`, {
      method: "POST",
    });
    expect(none.status).toBe(401);
    expect((await none.json()).errcode).toBe("M_MISSING_TOKEN");
    const bad = await w.refresh(bob(), "nope");
    expect(bad.status).toBe(401);
    expect(await bad.json()).toEqual({ errcode: "M_UNKNOWN_TOKEN", error: "Unknown token", soft_logout: false });
    const viaQuery = await fetch(
      `${w.proxy.url}/_matrix/client/v3/user/${encodeURIComponent(bob())}/devices/refresh?access_token=${alice}`,
      { method: "POST" },
    );
    expect(viaQuery.status).not.toBe(401);
  });

  test("the remote says the user does not exist → 404 M_NOT_FOUND, no retry", async () => {
    const res = await w.refresh(user("nobody"), alice);
    expect(res.status).toBe(404);
    expect((await res.json()).errcode).toBe("M_NOT_FOUND");
    expect(await w.proxy.services.store.getRetry(user("nobody"))).toBeUndefined();
  });

  test("a remote 5xx → 502 with remote_status and next_retry_in_ms; the retry lands with no further client call", async () => {
    const u = user("flaky");
    w.remote.setUser(makeUser(u));
    w.remote.setBehaviour({ kind: "status", status: 500 }, { userId: u });
    const res = await w.refresh(u, w.login("flakyasker"));
    expect(res.status).toBe(502);
    const body = await res.json();
    expect(body).toMatchObject({ errcode: "M_UNKNOWN", remote_status: 500 });
    expect(body.next_retry_in_ms).toBeGreaterThan(0);
    expect((await w.proxy.services.store.getRetry(u))?.attempts).toBe(1);
    await w.remote.waitFor(() => w.remote.count({ userId: u, endpoint: "devices" }) >= 2, 10_000);
    w.remote.clearBehaviours(); // the third attempt succeeds
    await expect.poll(async () => await w.proxy.services.store.getSnapshot(u), { timeout: 10_000 }).toBeDefined();
    expect(w.remote.count({ userId: u, endpoint: "devices" })).toBeGreaterThanOrEqual(3);
    expect(await w.proxy.services.store.getRetry(u)).toBeUndefined();
  });

  test("a remote 4xx other than 401/429 is final: 502 without a retry", async () => {
    const u = user("forbidden");
    w.remote.setBehaviour(
      { kind: "status", status: 403, body: { errcode: "M_FORBIDDEN", error: "no" } },
      { userId: u },
    );
    const body = await (await w.refresh(u, w.login("fasker"))).json();
    expect(body).toMatchObject({ errcode: "M_UNKNOWN", remote_status: 403 });
    expect(body.next_retry_in_ms).toBeUndefined();
    expect(await w.proxy.services.store.getRetry(u)).toBeUndefined();
  });
});

describe("coalescing, caching, limits", () => {
  test("50 concurrent refreshes of one user → exactly 1 federation request", async () => {
    const u = user("popular");
    w.remote.setUser(makeUser(u));
    const held = w.remote.hold({ userId: u, endpoint: "devices" });
    const all = Array.from({ length: 50 }, (_, i) => w.refresh(u, w.login(`fan${i}`)));
    await w.remote.waitFor(() => w.remote.inFlight > 0);
    held.release();
    const statuses = await Promise.all(all.map(async (r) => (await r).status));
    expect(statuses.every((s) => s === 202)).toBe(true);
    expect(w.remote.count({ userId: u, endpoint: "devices" })).toBe(1);
  });

  test("a refresh soon after a success is answered from the snapshot", async () => {
    const u = user("cached");
    w.remote.setUser(makeUser(u));
    expect((await w.refresh(u, alice)).status).toBe(202);
    expect((await w.refresh(u, w.login("other"))).status).toBe(202);
    expect(w.remote.count({ userId: u, endpoint: "devices" })).toBe(1);
  });

  test("a requester flood → 429 M_LIMIT_EXCEEDED with a usable retry_after_ms", async () => {
    const flooder = w.login("flooder");
    const answers = [];
    for (let i = 0; i < 15; i++) answers.push(await w.refresh(user(`flood${i}`), flooder));
    const limited = answers.find((r) => r.status === 429)!;
    expect(limited).toBeDefined();
    const body = await limited.json();
    expect(body.errcode).toBe("M_LIMIT_EXCEEDED");
    expect(body.retry_after_ms).toBeGreaterThan(0);
    expect(Number(limited.headers.get("retry-after"))).toBe(Math.ceil(body.retry_after_ms / 1000));
    expect(answers.filter((r) => r.status !== 429)).toHaveLength(10); // the documented burst
  });

  test("a target flooded by many requesters is limited per target", async () => {
    const u = user("target");
    w.remote.setBehaviour({ kind: "status", status: 403 }, { userId: u }); // never cached
    const statuses = [];
    for (let i = 0; i < 6; i++) statuses.push((await w.refresh(u, w.login(`t${i}`))).status);
    expect(statuses.slice(0, 3)).toEqual([502, 502, 502]);
    expect(statuses.slice(3)).toEqual([429, 429, 429]);
    expect(w.remote.count({ userId: u, endpoint: "devices" })).toBe(3);
  });
});
