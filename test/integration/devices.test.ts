// fetchUserDevices over real sockets: the real discovery and transport against the fake remote
// (HTTPS on loopback, certificate from a throw-away CA, X-Matrix checked independently).
import { randomBytes } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createDiscovery } from "../../src/federation/discovery.ts";
import { DEVICE_LIST_MAX_BYTES, fetchUserDevices, type FetchDevicesDeps } from "../../src/federation/devices.ts";
import { createResolver } from "../../src/federation/dns.ts";
import { FederationError } from "../../src/federation/errors.ts";
import { parseCidrList } from "../../src/federation/ip-guard.ts";
import { signingKeyFromSeed } from "../../src/federation/signing.ts";
import { createTransport } from "../../src/federation/transport.ts";
import { startDnsServer, type TestDnsServer } from "../helpers/dns-server.ts";
import { devicesAnswer, type Json, makeUser } from "../helpers/fake-devices.ts";
import { type FakeRemote, startFakeRemote } from "../helpers/fake-remote.ts";
import { createTestCa, type TestCa } from "../helpers/tls.ts";

const ORIGIN = "hs.local";
const key = signingKeyFromSeed(randomBytes(32), "t1");
let ca: TestCa;
let dns: TestDnsServer;
let remote: FakeRemote;
const closers: (() => unknown)[] = [];

beforeAll(async () => {
  ca = createTestCa();
  dns = await startDnsServer();
  remote = await startFakeRemote({ ca, trustedKeys: { [ORIGIN]: { [key.keyId]: key.publicKey } } });
});
afterAll(async () => {
  await remote.close();
  await dns.close();
  ca.cleanup();
});
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
  remote.clearBehaviours();
  remote.resetStats();
});

function deps(opts: { timeoutMs?: number; maxBytes?: number; signWith?: typeof key } = {}): FetchDevicesDeps {
  const discovery = createDiscovery({
    resolver: createResolver({ dnsServer: dns.address, timeoutMs: 2000 }),
    allowCidrs: parseCidrList("127.0.0.0/8 ::1/128"),
    ca: [ca.caPem],
  });
  const transport = createTransport({
    discovery,
    ca: [ca.caPem],
    timeoutMs: opts.timeoutMs ?? 10_000,
    maxBytes: opts.maxBytes ?? DEVICE_LIST_MAX_BYTES,
  });
  closers.push(() => transport.close());
  return { transport, origin: ORIGIN, key: opts.signWith ?? key, now: () => 1234 };
}

const userOn = (r: FakeRemote, local: string) => `@${local}:${r.serverName}`;

async function failure(p: Promise<unknown>): Promise<FederationError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(FederationError);
  return e as FederationError;
}

describe("success", () => {
  it("sends one signed GET with the encoded user id and returns the verified snapshot", async () => {
    const alice = userOn(remote, "alice");
    const u = makeUser(alice, { devices: ["A", "B"], displayNames: { A: "phone" }, streamId: 9 });
    remote.setUser(u);
    const { snapshot, dropped } = await fetchUserDevices(deps(), alice);

    expect(dropped).toEqual({ devices: 0, masterKey: false, selfSigningKey: false, parts: [], unlisted: 0 });
    expect(snapshot).toMatchObject({
      userId: alice,
      streamId: 9,
      fetchedAt: 1234,
      masterKey: u.masterKey,
      selfSigningKey: u.selfSigningKey,
    });
    expect(Object.keys(snapshot.devices).sort()).toEqual(["A", "B"]);
    expect(snapshot.devices.A!.unsigned).toEqual({ device_display_name: "phone" });

    expect(remote.requests).toHaveLength(1); // not empty: no profile query
    const [req] = remote.requests;
    expect(req).toMatchObject({
      method: "GET",
      authorized: true,
      origin: ORIGIN,
      host: remote.serverName,
      servername: null,
      url: `/_matrix/federation/v1/user/devices/%40alice%3A127.0.0.1%3A${remote.port}`,
    });
    expect(req!.headers.accept).toBe("application/json");
    expect(req!.headers.authorization).toMatch(
      /^X-Matrix origin="hs\.local",destination="127\.0\.0\.1:\d+",key="ed25519:t1",sig="/,
    );
  });

  it("counts dropped parts", async () => {
    const bob = userOn(remote, "bob");
    const u = makeUser(bob, { devices: ["A", "B"] });
    (u.devices[1]!.keys as Json).device_id = "C";
    remote.setUser(u);
    const { snapshot, dropped } = await fetchUserDevices(deps(), bob);
    expect(Object.keys(snapshot.devices)).toEqual(["A"]);
    expect(dropped.devices).toBe(1);
  });

  it("reaches a hostname server name through DNS, signing for that name", async () => {
    const named = await startFakeRemote({
      ca,
      dnsNames: ["remote.test"],
      trustedKeys: { [ORIGIN]: { [key.keyId]: key.publicKey } },
    });
    closers.push(() => named.close());
    named.serverName = `remote.test:${named.port}`;
    dns.setA("remote.test", "127.0.0.1");
    const carol = `@carol:remote.test:${named.port}`;
    named.setUser(makeUser(carol));
    const { snapshot } = await fetchUserDevices(deps(), carol);
    expect(Object.keys(snapshot.devices)).toEqual(["DEV0"]);
    expect(named.requests[0]).toMatchObject({
      authorized: true,
      host: `remote.test:${named.port}`,
      servername: "remote.test",
    });
  });

  it("reaches an IPv6 literal server name", async () => {
    const v6 = await startFakeRemote({ ca, host: "::1", trustedKeys: { [ORIGIN]: { [key.keyId]: key.publicKey } } });
    closers.push(() => v6.close());
    const dave = userOn(v6, "dave");
    expect(dave).toBe(`@dave:[::1]:${v6.port}`);
    v6.setUser(makeUser(dave));
    expect(Object.keys((await fetchUserDevices(deps(), dave)).snapshot.devices)).toEqual(["DEV0"]);
    expect(v6.requests[0]).toMatchObject({
      authorized: true,
      url: `/_matrix/federation/v1/user/devices/%40dave%3A%5B%3A%3A1%5D%3A${v6.port}`,
    });
  });
});

describe("user existence", () => {
  it("a user the remote does not know: empty list, then profile 404 -> not_found", async () => {
    const ghost = userOn(remote, "ghost");
    const e = await failure(fetchUserDevices(deps(), ghost));
    expect(e.kind).toBe("not_found");
    expect(e.message).toContain("M_NOT_FOUND");
    expect(remote.requests.map((r) => [r.endpoint, r.authorized])).toEqual([
      ["devices", true],
      ["profile", true],
    ]);
    expect(remote.requests[1]!.url).toBe(
      `/_matrix/federation/v1/query/profile?user_id=%40ghost%3A127.0.0.1%3A${remote.port}`,
    );
  });

  it("an existing user without devices or keys: an empty snapshot", async () => {
    const empty = userOn(remote, "empty");
    remote.setUser(makeUser(empty, { devices: [], crossSigning: false }));
    const { snapshot } = await fetchUserDevices(deps(), empty);
    expect(snapshot).toEqual({ userId: empty, streamId: 1, devices: {}, fetchedAt: 1234 });
    expect(remote.count({ endpoint: "profile" })).toBe(1);
  });

  it("profile lookups disabled (403) or unknown endpoint (404 M_UNRECOGNIZED) leave the empty list standing", async () => {
    const ghost = userOn(remote, "ghost2");
    remote.setBehaviour(
      { kind: "status", status: 403, body: { errcode: "M_FORBIDDEN", error: "disabled" } },
      { endpoint: "profile" },
    );
    expect((await fetchUserDevices(deps(), ghost)).snapshot.devices).toEqual({});
    remote.setBehaviour(
      { kind: "status", status: 404, body: { errcode: "M_UNRECOGNIZED", error: "no" } },
      { endpoint: "profile" },
    );
    expect((await fetchUserDevices(deps(), ghost)).snapshot.devices).toEqual({});
  });

  it("a profile query that fails on the network fails the fetch", async () => {
    const ghost = userOn(remote, "ghost3");
    remote.setBehaviour({ kind: "hang" }, { endpoint: "profile" });
    expect((await failure(fetchUserDevices(deps({ timeoutMs: 500 }), ghost))).kind).toBe("timeout");
  });
});

describe("failures", () => {
  const erin = () => userOn(remote, "erin");

  it("a wrong signing key: the remote answers 401, surfaced as remote 401", async () => {
    remote.setUser(makeUser(erin()));
    const wrong = signingKeyFromSeed(randomBytes(32), "t1");
    const e = await failure(fetchUserDevices(deps({ signWith: wrong }), erin()));
    expect(e).toMatchObject({ kind: "remote", status: 401 });
    expect(e.message).toContain("M_UNAUTHORIZED");
    expect(remote.requests[0]).toMatchObject({ authorized: false, reason: "signature does not verify" });
  });

  it("404 -> not_found", async () => {
    remote.setBehaviour({ kind: "status", status: 404, body: { errcode: "M_NOT_FOUND", error: "gone" } });
    expect(await failure(fetchUserDevices(deps(), erin()))).toMatchObject({ kind: "not_found", status: 404 });
  });

  it("404 M_UNRECOGNIZED (no such endpoint) -> remote 404, not not_found", async () => {
    remote.setBehaviour({
      kind: "status",
      status: 404,
      body: { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" },
    });
    expect(await failure(fetchUserDevices(deps(), erin()))).toMatchObject({ kind: "remote", status: 404 });
  });

  it.each([500, 429, 502])("%i -> remote with the status and errcode", async (status) => {
    remote.setBehaviour({
      kind: "status",
      status,
      body: { errcode: status === 429 ? "M_LIMIT_EXCEEDED" : "M_UNKNOWN", error: "x" },
    });
    const e = await failure(fetchUserDevices(deps(), erin()));
    expect(e).toMatchObject({ kind: "remote", status });
    expect(e.message).toContain(status === 429 ? "M_LIMIT_EXCEEDED" : "M_UNKNOWN");
  });

  it("a remote that never answers -> timeout", async () => {
    remote.setBehaviour({ kind: "hang" });
    expect((await failure(fetchUserDevices(deps({ timeoutMs: 500 }), erin()))).kind).toBe("timeout");
  });

  it.each([
    ["HTML", "<html>502 Bad Gateway</html>"],
    ["invalid UTF-8", new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x7d])],
    ["a JSON array", "[]"],
  ])("%s with status 200 -> invalid", async (_label, body) => {
    remote.setBehaviour({ kind: "raw", body, contentType: "text/html" });
    expect((await failure(fetchUserDevices(deps(), erin()))).kind).toBe("invalid");
  });

  it("an answer about another user -> invalid", async () => {
    remote.setAnswer(erin(), devicesAnswer(makeUser(userOn(remote, "frank"))));
    expect((await failure(fetchUserDevices(deps(), erin()))).kind).toBe("invalid");
  });

  it(`an answer over ${DEVICE_LIST_MAX_BYTES} bytes -> too_large`, async () => {
    remote.setBehaviour({ kind: "raw", body: new Uint8Array(DEVICE_LIST_MAX_BYTES + 1).fill(0x20) });
    expect((await failure(fetchUserDevices(deps(), erin()))).kind).toBe("too_large");
  });

  it("an invalid user id fails before any request", async () => {
    for (const bad of ["alice:remote.test", "@alice", "@alice:", "@:remote.test"]) {
      expect((await failure(fetchUserDevices(deps(), bad))).kind).toBe("invalid");
    }
    expect(remote.requests).toHaveLength(0);
  });
});

describe("the fake remote's concurrency tracking", () => {
  it("holds requests in flight, and the transport sends at most 3 at once to one destination", async () => {
    const users = ["g1", "g2", "g3", "g4", "g5"].map((l) => userOn(remote, l));
    for (const u of users) remote.setUser(makeUser(u));
    const gate = remote.hold();
    const d = deps();
    const all = Promise.all(users.map((u) => fetchUserDevices(d, u)));
    await remote.waitFor(() => remote.inFlight === 3);
    expect(remote.count({ endpoint: "devices" })).toBe(3);
    gate.release();
    const results = await all;
    expect(results.map((r) => r.snapshot.userId)).toEqual(users);
    expect(remote.maxInFlight).toBe(3);
    expect(remote.inFlight).toBe(0);
  });
});
