// Freshness and revocation, over real sockets: an older answer (lower stream_id) never replaces
// a newer snapshot; a token the homeserver revoked, or soft-logged-out, stops causing signed
// federation requests at once rather than when the whoami cache expires.
import type { IncomingMessage, ServerResponse } from "node:http";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { startWorld, type World } from "../helpers/world.ts";
import { sample, scrape } from "./ops-helpers.ts";

let w: World;
const json = (res: ServerResponse, status: number, body: unknown) => {
  const s = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(s) });
  res.end(s);
};
const keysQuery = async (token: string, userId: string) => {
  const res = await fetch(`${w.proxy.url}/_matrix/client/v3/keys/query`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ device_keys: { [userId]: [] } }),
  });
  return ((await res.json()) as { device_keys: Record<string, Record<string, unknown>> }).device_keys[userId] ?? {};
};

beforeAll(async () => {
  w = await startWorld(["--refresh-cache-ms", "0", "--rate-target-burst", "100", "--metrics-listen", "127.0.0.1:0"]);
  // The homeserver cannot reach the remote: its own answer lists no devices.
  w.hs.on("/_matrix/client/v3/keys/query", (_req, res, body) =>
    json(res, 200, {
      device_keys: Object.fromEntries(Object.keys(JSON.parse(body.toString()).device_keys).map((u) => [u, {}])),
    }),
  );
});
afterAll(() => w.close());

describe("stream_id", () => {
  test("a remote answer older than the stored snapshot does not replace it, and is counted", async () => {
    const alice = w.login("alice");
    const bobId = `@bob:${w.remote.serverName}`;
    w.remote.setUser(makeUser(bobId, { devices: ["DEV0", "DEV1"], streamId: 10 }));
    expect((await w.refresh(bobId, alice)).status).toBe(202);
    expect(Object.keys(await keysQuery(alice, bobId)).sort()).toEqual(["DEV0", "DEV1"]);

    // A lagging replica (or a reordered answer) serves the list as it was at stream_id 5.
    w.remote.setUser(makeUser(bobId, { devices: ["DEV0"], streamId: 5 }));
    expect((await w.refresh(bobId, alice)).status).toBe(202);
    expect(w.remote.count({ userId: bobId, endpoint: "devices" })).toBe(2);
    expect(Object.keys(await keysQuery(alice, bobId)).sort()).toEqual(["DEV0", "DEV1"]);
    expect(sample(await scrape(w.proxy.opsAddress!), "resync_federation_stale_answers_total")).toBe(1);

    // A newer one does replace it.
    w.remote.setUser(makeUser(bobId, { devices: ["DEV0", "DEV1", "DEV2"], streamId: 11 }));
    expect((await w.refresh(bobId, alice)).status).toBe(202);
    expect(Object.keys(await keysQuery(alice, bobId)).sort()).toEqual(["DEV0", "DEV1", "DEV2"]);
    expect(sample(await scrape(w.proxy.opsAddress!), "resync_federation_stale_answers_total")).toBe(1);
  });
});

describe("revoked tokens", () => {
  test("a token revoked after a successful refresh gets the homeserver's 401 and causes no federation request", async () => {
    const carol = w.login("carol");
    const first = `@first:${w.remote.serverName}`;
    const second = `@second:${w.remote.serverName}`;
    w.remote.setUser(makeUser(first));
    w.remote.setUser(makeUser(second));
    expect((await w.refresh(first, carol)).status).toBe(202);

    w.hs.tokens.delete(carol); // logged out, or revoked by an admin
    const res = await w.refresh(second, carol);
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ errcode: "M_UNKNOWN_TOKEN" });
    expect(w.remote.count({ userId: second })).toBe(0);
  });

  test("a soft-logged-out token: the homeserver's soft_logout answer, no federation request", async () => {
    const dave = w.login("dave");
    const first = `@third:${w.remote.serverName}`;
    const second = `@fourth:${w.remote.serverName}`;
    w.remote.setUser(makeUser(first));
    w.remote.setUser(makeUser(second));
    expect((await w.refresh(first, dave)).status).toBe(202);

    // Client-server API §Soft logout: the token is no longer valid; the device may log in again.
    const softLogout = { errcode: "M_UNKNOWN_TOKEN", error: "Access token has expired", soft_logout: true };
    w.hs.on("/_matrix/client/v3/account/whoami", (req: IncomingMessage, res: ServerResponse) => {
      const who = w.hs.tokens.get(req.headers.authorization?.replace(/^Bearer /, "") ?? "");
      if (!who || who[0] === "@dave:hs.test") return json(res, 401, softLogout);
      json(res, 200, { user_id: who[0], device_id: who[1] });
    });
    const res = await w.refresh(second, dave);
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual(softLogout);
    expect(w.remote.count({ userId: second })).toBe(0);
  });
});
