// A homeserver that serves only r0 client paths (Synapse before 1.48): every call the proxy
// makes itself falls back from v3 to r0, remembers it, and the routes it intercepts still
// track, overlay and inject. Over real sockets, through both client engines.
import type { IncomingMessage, ServerResponse } from "node:http";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { runDoctor } from "../../src/commands/doctor.ts";
import { makeUser } from "../helpers/fake-devices.ts";
import type { FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { testConfig, useTestEngine } from "../helpers/proxy.ts";
import { startWorld, type World } from "../helpers/world.ts";

const json = (res: ServerResponse, status: number, body: unknown) => {
  const s = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(s) });
  res.end(s);
};

// Synapse 1.47's 401 wording, so a test can tell the homeserver's body from one of ours. (Its
// missing v3 paths answer Twisted's HTML 404: test/e2e/old-synapse.test.ts meets the real one.)
const UNKNOWN_TOKEN = { errcode: "M_UNKNOWN_TOKEN", error: "Invalid macaroon passed.", soft_logout: false };

/** Make the fake homeserver r0-only; its missing v3 routes answer `v3Status` with M_UNRECOGNIZED. */
function serveOnlyR0(hs: FakeHomeserver, v3Status = 404): void {
  const who = (req: IncomingMessage) => hs.tokens.get(req.headers.authorization?.replace(/^Bearer /, "") ?? "");
  const authed =
    (handler: (req: IncomingMessage, res: ServerResponse, me: [string, string], body: Buffer) => void) =>
    (req: IncomingMessage, res: ServerResponse, body: Buffer) => {
      const me = who(req);
      if (!me)
        return json(
          res,
          401,
          req.headers.authorization ? UNKNOWN_TOKEN : { errcode: "M_MISSING_TOKEN", error: "Missing access token." },
        );
      handler(req, res, me, body);
    };
  hs.on("/_matrix/client/v3/", (_req, res) =>
    json(res, v3Status, { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" }),
  );
  hs.on(
    "/_matrix/client/r0/account/whoami",
    authed((_req, res, me) => json(res, 200, { user_id: me[0], device_id: me[1] })),
  );
  hs.on(
    "/_matrix/client/r0/devices",
    authed((_req, res, me) =>
      json(res, 200, {
        devices: [...hs.tokens.values()].filter(([u]) => u === me[0]).map(([, d]) => ({ device_id: d })),
      }),
    ),
  );
  hs.on(
    "/_matrix/client/r0/sync",
    authed((_req, res) => json(res, 200, { next_batch: `s${hs.seen.length}`, rooms: {} })),
  );
  hs.on(
    "/_matrix/client/r0/keys/query",
    authed((_req, res, _me, body) => {
      const asked = Object.keys((JSON.parse(body.toString()) as { device_keys: Record<string, unknown> }).device_keys);
      // The homeserver cannot reach the remote: no devices, a failure for its server.
      json(res, 200, {
        device_keys: Object.fromEntries(asked.map((u) => [u, {}])),
        failures: { [asked[0]!.split(":").slice(1).join(":")]: { status: 503 } },
      });
    }),
  );
}

const engines =
  typeof (globalThis as { Bun?: unknown }).Bun !== "undefined" ? (["bun", "node"] as const) : (["node"] as const);

for (const engine of engines) {
  describe(`r0-only homeserver, engine ${engine}`, () => {
    let w: World;
    const api = (token: string, path: string, init: RequestInit = {}) =>
      fetch(w.proxy.url + path, {
        ...init,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      });

    beforeAll(async () => {
      useTestEngine(engine);
      w = await startWorld(["--refresh-cache-ms", "0", "--metrics-listen", "127.0.0.1:0"]);
      serveOnlyR0(w.hs, engine === "bun" ? 404 : 400);
    });
    afterAll(async () => {
      await w.close();
      useTestEngine("auto");
    });

    test("a bogus token gets the homeserver's own 401 from its r0 whoami, not a 502", async () => {
      const res = await w.refresh(`@bob:${w.remote.serverName}`, "bogus", { prefix: "/_matrix/client/r0" });
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual(UNKNOWN_TOKEN);
    });

    test("refresh 202; /sync (r0) names bob on the requester's other device; /keys/query (r0) carries the overlay", async () => {
      const bob = makeUser(`@bob:${w.remote.serverName}`, { devices: ["DEV0", "DEV1"] });
      w.remote.setUser(bob);
      const alice = w.login("alice", "ALICE1");
      const alice2 = w.login("alice", "ALICE2"); // known to the proxy only through GET /r0/devices
      const refresh = await w.refresh(bob.userId, alice, { prefix: "/_matrix/client/r0" });
      expect(refresh.status).toBe(202);
      expect(w.remote.count({ userId: bob.userId, endpoint: "devices" })).toBe(1);

      const synced = await (await api(alice2, "/_matrix/client/r0/sync?since=s0&timeout=0")).json();
      expect(synced.device_lists?.changed).toEqual([bob.userId]);
      const keys = await (
        await api(alice, "/_matrix/client/r0/keys/query", {
          method: "POST",
          body: JSON.stringify({ device_keys: { [bob.userId]: [] } }),
        })
      ).json();
      expect(Object.keys(keys.device_keys[bob.userId]).sort()).toEqual(["DEV0", "DEV1"]);
      expect(keys.failures).toEqual({});
    });

    test("the working prefix is remembered: v3 is asked once, then only r0", async () => {
      const carol = w.login("carol", "CAROL1");
      for (let i = 0; i < 3; i++) await w.refresh(`@bob:${w.remote.serverName}`, carol);
      const v3 = w.hs.seen.filter((s) => /^\/_matrix\/client\/v3\/(account\/whoami|devices)/.test(s.target));
      expect(v3).toHaveLength(1); // the very first whoami of the test file
      expect(w.hs.seen.filter((s) => s.target === "/_matrix/client/r0/devices").length).toBeGreaterThanOrEqual(2);
    });

    test("/readyz checks that the whoami path answers 401 without a token", async () => {
      const res = await fetch(`http://${w.proxy.opsAddress}/readyz`);
      const body = (await res.json()) as { checks: Record<string, string> };
      expect(body.checks.whoami).toBe("ok");
    });
  });
}

describe("doctor and /readyz against an upstream that is not a client API", () => {
  let w: World;
  beforeAll(async () => {
    w = await startWorld(["--metrics-listen", "127.0.0.1:0"]);
  });
  afterAll(() => w.close());

  test("an r0-only homeserver passes doctor's whoami check", async () => {
    serveOnlyR0(w.hs);
    const lines: string[] = [];
    await runDoctor({ ...testConfig(w.hs.url), args: [] }, (l) => void lines.push(l));
    expect(lines.join("\n")).toMatch(
      /^ok {3}homeserver .*\/_matrix\/client\/r0\/account\/whoami without a token answered 401/m,
    );
  });

  test("whoami answering anything but 401 without a token fails doctor and /readyz, naming the path", async () => {
    w.hs.on("/_matrix/client/", (_req, res) =>
      json(res, 404, { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" }),
    );
    const lines: string[] = [];
    const code = await runDoctor({ ...testConfig(w.hs.url), args: [] }, (l) => void lines.push(l));
    const text = lines.join("\n");
    expect(text).toMatch(/^FAIL homeserver .*account\/whoami without a token answered 404 \(expected 401\)/m);
    expect(text).toContain("some checks failed");
    expect(code).toBe(1);
    const res = await fetch(`http://${w.proxy.opsAddress}/readyz`);
    expect(res.status).toBe(503);
    const body = (await res.json()) as { checks: Record<string, string> };
    expect(body.checks.whoami).toMatch(/account\/whoami without a token answered 404 \(expected 401\)/);
  });
});
