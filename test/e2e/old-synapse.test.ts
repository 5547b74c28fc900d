// The proxy in front of a real Synapse 1.47.1, the last release that serves only r0 client
// paths (v3 answers Twisted's HTML 404). Everything the proxy asks the homeserver itself
// (whoami, the requester's devices, readiness) must fall back to r0, and a client of that
// server must still get the refresh, the /sync injection and the /keys/query overlay. The
// remote is the fake remote (test/helpers/fake-remote.ts): it verifies our X-Matrix signature
// against the old Synapse's own key, and the old Synapse itself cannot reach it, so its own
// /keys/query answer is visibly stale.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type OldSynapse, startOldSynapse } from "../../scripts/homeservers/old-synapse.ts";
import { parseCli } from "../../src/config/config.ts";
import { loadSigningKey } from "../../src/federation/keyfile.ts";
import { runDoctor } from "../../src/commands/doctor.ts";
import { makeUser, type FakeUser } from "../helpers/fake-devices.ts";
import { startFakeRemote, type FakeRemote } from "../helpers/fake-remote.ts";
import { createTestCa, type TestCa } from "../helpers/tls.ts";
import { call, type Session, type SyncAnswer } from "./helpers/client.ts";
import { hs1ProxyFlags, refreshDevices, startHs1Proxy, type Hs1Proxy } from "./helpers/proxy.ts";

const log = (s: string): void => console.log(`[e2e old-synapse] ${s}`);
let old: OldSynapse;
let ca: TestCa;
let caPath: string;
let remote: FakeRemote;
let proxy: Hs1Proxy;
let bob: FakeUser;
let alice: Session;
let alicePhone: Session;

/** r0 registration (user-interactive: dummy auth), as a client of Synapse 1.47 does it. */
async function registerR0(clientUrl: string, username: string): Promise<Session> {
  const password = `pw-${username}-old`;
  const request = { username, password, initial_device_display_name: `${username}'s laptop` };
  const first = await call<{ session?: string }>(clientUrl, "POST", "/_matrix/client/r0/register", {
    body: request,
    allow: [401],
  });
  const done = await call<{ user_id: string; access_token: string; device_id: string }>(
    clientUrl,
    "POST",
    "/_matrix/client/r0/register",
    {
      body: { ...request, auth: { type: "m.login.dummy", session: first.body.session } },
    },
  );
  return {
    clientUrl,
    userId: done.body.user_id,
    accessToken: done.body.access_token,
    deviceId: done.body.device_id,
    password,
  };
}

async function loginR0(s: Session): Promise<Session> {
  const { body } = await call<{ access_token: string; device_id: string }>(
    s.clientUrl,
    "POST",
    "/_matrix/client/r0/login",
    {
      body: {
        type: "m.login.password",
        identifier: { type: "m.id.user", user: s.userId },
        password: s.password,
        initial_device_display_name: "phone",
      },
    },
  );
  return { ...s, accessToken: body.access_token, deviceId: body.device_id };
}

const via = (s: Session, url: string): Session => ({ ...s, clientUrl: url });
const syncR0 = async (s: Session, since?: string): Promise<SyncAnswer> =>
  (
    await call<SyncAnswer>(
      s.clientUrl,
      "GET",
      `/_matrix/client/r0/sync?timeout=0${since ? `&since=${encodeURIComponent(since)}` : ""}`,
      { token: s.accessToken },
    )
  ).body;
const keysQueryR0 = async (s: Session, userId: string) =>
  (
    await call<{ device_keys: Record<string, Record<string, unknown>>; failures?: Record<string, unknown> }>(
      s.clientUrl,
      "POST",
      "/_matrix/client/r0/keys/query",
      {
        token: s.accessToken,
        body: { device_keys: { [userId]: [] }, timeout: 5_000 },
      },
    )
  ).body;

describe("the proxy in front of Synapse 1.47 (r0 client paths only)", () => {
  beforeAll(async () => {
    old = await startOldSynapse({ log });
    ca = createTestCa();
    caPath = join(mkdtempSync(join(tmpdir(), "old-synapse-ca-")), "ca.pem");
    writeFileSync(caPath, ca.caPem);
    const key = await loadSigningKey(old.signingKeyPath);
    remote = await startFakeRemote({ ca, trustedKeys: { [old.serverName]: { [key.keyId]: key.publicKey } } });
    bob = makeUser(`@bob:${remote.serverName}`, { devices: ["BOBLAPTOP", "BOBPHONE"] });
    remote.setUser(bob);
    proxy = await startHs1Proxy(old, caPath, { extra: ["--refresh-cache-ms", "0", "--metrics-listen", "127.0.0.1:0"] });
    alice = await registerR0(old.clientUrl, "alice");
    alicePhone = await loginR0(alice);
  }, 600_000);

  afterAll(async () => {
    await proxy?.close();
    await remote?.close();
    ca?.cleanup();
    await old?.stop();
  }, 60_000);

  test("the homeserver really is r0-only", async () => {
    expect((await call(old.clientUrl, "GET", "/_matrix/client/v3/account/whoami", { allow: [404] })).status).toBe(404);
    expect((await call(old.clientUrl, "GET", "/_matrix/client/r0/account/whoami", { allow: [401] })).status).toBe(401);
  });

  test("a bogus token gets the homeserver's own 401 body, on the r0 and the v3 refresh route", async () => {
    const direct = await call(old.clientUrl, "GET", "/_matrix/client/r0/account/whoami", {
      token: "bogus",
      allow: [401],
    });
    expect(direct.body).toMatchObject({ errcode: "M_UNKNOWN_TOKEN" });
    for (const prefix of ["/_matrix/client/r0", "/_matrix/client/v3"]) {
      const res = await fetch(`${proxy.url}${prefix}/user/${encodeURIComponent(bob.userId)}/devices/refresh`, {
        method: "POST",
        headers: { authorization: "Bearer bogus", "content-type": "application/json" },
        body: "{}",
      });
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual(direct.body);
    }
    expect(remote.count()).toBe(0);
  });

  test("refresh 202; the phone's /sync through the proxy names bob; /keys/query through the proxy has his devices", async () => {
    const since = (await syncR0(via(alicePhone, proxy.url))).next_batch;
    const answer = await refreshDevices(proxy.url, alice.accessToken, bob.userId);
    expect(answer).toEqual({ status: 202, body: {} });
    // The fake remote verified our X-Matrix signature against the old Synapse's published key.
    expect(remote.requests.filter((r) => r.endpoint === "devices")).toEqual([
      expect.objectContaining({ authorized: true, origin: old.serverName }),
    ]);

    // The phone never asked: it hears of bob because the proxy listed alice's devices (GET /r0/devices).
    const synced = await syncR0(via(alicePhone, proxy.url), since);
    expect(synced.device_lists?.changed ?? []).toContain(bob.userId);
    expect((await syncR0(alicePhone, since)).device_lists?.changed ?? []).not.toContain(bob.userId);

    const direct = await keysQueryR0(alice, bob.userId);
    expect(Object.keys(direct.device_keys[bob.userId] ?? {})).toEqual([]); // Synapse 1.47 cannot reach bob's server
    const proxied = await keysQueryR0(via(alice, proxy.url), bob.userId);
    expect(Object.keys(proxied.device_keys[bob.userId] ?? {}).sort()).toEqual(["BOBLAPTOP", "BOBPHONE"]);
    expect(proxied.failures ?? {}).not.toHaveProperty(remote.serverName);

    expect(proxy.running.services.auth.paths.preferred).toBe("r0");
    expect(proxy.logs.filter((l) => String(l.msg).includes("could not list the requester's devices"))).toEqual([]);
  }, 120_000);

  test("a long-poll (r0) already waiting at Synapse 1.47 is answered when a refresh lands", async () => {
    const phone = via(alicePhone, proxy.url);
    let since = (await syncR0(phone)).next_batch;
    // Acknowledge what is pending, so the poll below has nothing to say until the refresh.
    for (let i = 0; i < 3; i++) since = (await syncR0(phone, since)).next_batch;
    const params = new URLSearchParams({ since, timeout: "300000" }); // far beyond this test's own timeout
    const polling = call<SyncAnswer>(proxy.url, "GET", `/_matrix/client/r0/sync?${params}`, {
      token: alicePhone.accessToken,
    });
    await expect.poll(() => proxy.running.services.delivery.waiters.count, { timeout: 10_000 }).toBe(1); // it waits at Synapse
    remote.setUser(makeUser(bob.userId, { devices: ["BOBLAPTOP", "BOBPHONE", "BOBTABLET"], streamId: 2 }));
    expect((await refreshDevices(proxy.url, alice.accessToken, bob.userId)).status).toBe(202);
    expect((await polling).body.device_lists?.changed ?? []).toContain(bob.userId);
  }, 60_000);

  test("/readyz and doctor: the whoami path answers 401 without a token", async () => {
    const ready = await fetch(`http://${proxy.running.opsAddress}/readyz`);
    expect(((await ready.json()) as { checks: Record<string, string> }).checks.whoami).toBe("ok");
    const action = parseCli([...hs1ProxyFlags(old, caPath, proxy.dataDir), "--log-level", "error"], {});
    if (action.kind !== "run") throw new Error(action.kind);
    const lines: string[] = [];
    await runDoctor({ ...action.config, args: [] }, (l) => void lines.push(l));
    log(lines.join("\n"));
    expect(lines).toContain(
      `ok   homeserver ${old.clientUrl}: /_matrix/client/r0/account/whoami without a token answered 401`,
    );
  }, 60_000);
});
