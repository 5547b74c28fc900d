// Request logs over real sockets: request ids (X-Request-Id), the fields of each line, the
// level policy, and that no secret that crossed the proxy ever appears in a line.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { startFakeRemote, type FakeRemote } from "../helpers/fake-remote.ts";
import { createTestCa, type TestCa } from "../helpers/tls.ts";
import { OUR_KEY_ID, OUR_PUBLIC_KEY } from "../helpers/world.ts";
import { startLoggedProxy } from "./ops-helpers.ts";

type Proxy = Awaited<ReturnType<typeof startLoggedProxy>>;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"; // the test key file's seed (helpers/proxy.ts)

let hs: FakeHomeserver;
let remote: FakeRemote;
let ca: TestCa;
let flags: string[];
const proxies: Proxy[] = [];

beforeAll(async () => {
  ca = createTestCa();
  const caPath = join(mkdtempSync(join(tmpdir(), "ops-logs-")), "ca.pem");
  writeFileSync(caPath, ca.caPem);
  hs = await startFakeHomeserver();
  remote = await startFakeRemote({ ca, trustedKeys: { "hs.test": { [OUR_KEY_ID]: OUR_PUBLIC_KEY } } });
  flags = [
    "--federation-ca",
    caPath,
    "--federation-allow-cidrs",
    "127.0.0.0/8",
    "--refresh-wait-ms",
    "3000",
    "--retry-initial-ms",
    "600000",
    "--retry-max-ms",
    "600000",
  ];
});
afterAll(async () => {
  for (const p of proxies) await p.close(1000);
  await remote.close();
  await hs.close();
  ca.cleanup();
});

async function proxyWith(extra: string[] = [], level: "debug" | "info" = "debug"): Promise<Proxy> {
  const p = await startLoggedProxy(hs.url, [...flags, ...extra], level);
  proxies.push(p);
  return p;
}

const requestLines = (p: Proxy) => p.records().filter((r) => r.msg === "request");
const lineFor = async (p: Proxy, id: string) => {
  await expect.poll(() => requestLines(p).some((r) => r.request_id === id)).toBe(true);
  return requestLines(p).find((r) => r.request_id === id)!;
};

describe("request ids", () => {
  test("each request gets a fresh id: returned as X-Request-Id, logged, and sent to the homeserver", async () => {
    const p = await proxyWith();
    const res = await fetch(`${p.url}/_matrix/client/v3/rooms/!r:hs.test/state`);
    expect(res.status).toBe(401);
    const id = res.headers.get("x-request-id")!;
    expect(id).toMatch(UUID);
    expect(hs.seen.at(-1)!.headers["x-request-id"]).toBe(id);
    const line = await lineFor(p, id);
    expect(line).toMatchObject({
      level: "debug",
      method: "GET",
      route: "passthrough",
      status: 401,
      client: "127.0.0.1",
      target: "/_matrix/client/v3/rooms/!r:hs.test/state",
    });
    expect(typeof line.duration_ms).toBe("number");
    expect(line.duration_ms as number).toBeGreaterThanOrEqual(0);
    const second = await fetch(`${p.url}/_matrix/client/v3/rooms/!r:hs.test/state`);
    expect(second.headers.get("x-request-id")).not.toBe(id);
  });

  test("behind a trusted proxy, the line names the client from X-Forwarded-For (pass-through and /sync)", async () => {
    const p = await proxyWith(["--trusted-proxies", "127.0.0.1/32"]);
    // 203.0.113.7 (TEST-NET-3) is only a header value here: nothing connects to it.
    for (const path of ["/_matrix/client/v3/rooms/!r:hs.test/state", "/_matrix/client/v3/sync?since=s1&timeout=0"]) {
      const res = await fetch(p.url + path, { headers: { "x-forwarded-for": "203.0.113.7" } });
      await res.arrayBuffer();
      const line = await lineFor(p, res.headers.get("x-request-id")!);
      expect(line.client).toBe("203.0.113.7");
    }
  });

  test("the proxy's own answers carry the id too (intercepted route, error, health)", async () => {
    const p = await proxyWith();
    for (const [path, init] of [
      ["/_matrix/client/versions", {}],
      ["/_matrix/client/v3/user/%40b%3Ar.test/devices/refresh", { method: "POST" }],
      ["/_resync/healthz", {}],
    ] as const) {
      const res = await fetch(p.url + path, init);
      await res.arrayBuffer();
      expect(res.headers.get("x-request-id")).toMatch(UUID);
    }
    expect(requestLines(p).map((r) => [r.route, r.status])).toEqual([
      ["versions", 200],
      ["refresh", 401],
      ["health", 200],
    ]);
  });

  test("an inbound X-Request-Id is replaced unless it comes from a trusted proxy", async () => {
    const untrusted = await proxyWith();
    const a = await fetch(`${untrusted.url}/_matrix/client/versions`, { headers: { "x-request-id": "lb-abc-123" } });
    expect(a.headers.get("x-request-id")).toMatch(UUID);
    expect(hs.seen.at(-1)!.headers["x-request-id"]).toBe(a.headers.get("x-request-id"));

    const trusted = await proxyWith(["--trusted-proxies", "loopback"]);
    const b = await fetch(`${trusted.url}/_matrix/client/versions`, { headers: { "x-request-id": "lb-abc-123" } });
    expect(b.headers.get("x-request-id")).toBe("lb-abc-123");
    expect(hs.seen.at(-1)!.headers["x-request-id"]).toBe("lb-abc-123");
    expect((await lineFor(trusted, "lb-abc-123")).route).toBe("versions");
    // Even a trusted peer cannot inject a field or a header: such ids are replaced.
    for (const bad of ['x","level":"error', "a".repeat(200), "with space"]) {
      const c = await fetch(`${trusted.url}/_matrix/client/versions`, { headers: { "x-request-id": bad } });
      expect(c.headers.get("x-request-id")).toMatch(UUID);
    }
  });
});

describe("levels: info stays quiet on a busy server", () => {
  test("routine pass-through and sync at debug (dropped at info); refreshes at info; 5xx at warn", async () => {
    const p = await proxyWith([], "info");
    hs.tokens.set("tok_levels", ["@lev:hs.test", "LEV"]);
    const auth = { authorization: "Bearer tok_levels" };
    await (await fetch(`${p.url}/_matrix/client/versions`)).arrayBuffer();
    await (await fetch(`${p.url}/_matrix/client/v3/sync?timeout=0`, { headers: auth })).arrayBuffer();
    const refresh = await fetch(`${p.url}/_matrix/client/v3/user/%40carol%3Ahs.test/devices/refresh`, {
      method: "POST",
      headers: auth,
    });
    expect(refresh.status).toBe(202);
    hs.on("/_matrix/client/v3/joined_rooms", (_req, res) => {
      res.writeHead(500);
      res.end();
    });
    await (await fetch(`${p.url}/_matrix/client/v3/joined_rooms`, { headers: auth })).arrayBuffer();
    // Polled: a line from another front-end thread (--front-threads) arrives a moment later.
    await expect
      .poll(() => requestLines(p).map((r) => [r.level, r.route, r.status]))
      .toEqual([
        ["info", "refresh", 202],
        ["warn", "passthrough", 500],
      ]);
  });
});

describe("redaction: no secret that crossed the proxy reaches a log line", () => {
  test("access tokens (header and query), X-Matrix signatures, the key seed", async () => {
    const p = await proxyWith(); // debug: every line is written
    const token = "syt_c2VjcmV0_TOPSECRETtokenVALUE_1a2b3c";
    hs.tokens.set(token, ["@sec:hs.test", "SECDEV"]);
    const headerToken = { authorization: `Bearer ${token}` };
    await (await fetch(`${p.url}/_matrix/client/v3/sync?timeout=0&access_token=${token}`)).arrayBuffer();
    await (await fetch(`${p.url}/_matrix/client/v3/account/whoami`, { headers: headerToken })).arrayBuffer();
    await (await fetch(`${p.url}/_matrix/client/v3/joined_rooms?access_token=${token}&x=1`)).arrayBuffer();
    await (await fetch(`${p.url}/_matrix/client/v3/rooms/x/state?access_token=not-valid-${token}`)).arrayBuffer();
    // Federation: one success and one failure (logged with its error), both signed with X-Matrix.
    const bob = `@bob:${remote.serverName}`;
    const broken = `@broken:${remote.serverName}`;
    remote.setUser(makeUser(bob));
    remote.setBehaviour(
      { kind: "status", status: 500, body: { errcode: "M_UNKNOWN", error: "boom" } },
      { userId: broken },
    );
    expect(
      (
        await fetch(`${p.url}/_matrix/client/v3/user/${encodeURIComponent(bob)}/devices/refresh`, {
          method: "POST",
          headers: headerToken,
        })
      ).status,
    ).toBe(202);
    expect(
      (
        await fetch(
          `${p.url}/_matrix/client/v3/user/${encodeURIComponent(broken)}/devices/refresh?access_token=${token}`,
          { method: "POST" },
        )
      ).status,
    ).toBe(502);

    const sigs = remote.requests
      .map((r) => /sig="([^"]+)"/.exec(String(r.headers.authorization))?.[1])
      .filter((s): s is string => !!s);
    expect(sigs.length).toBeGreaterThanOrEqual(2);
    await expect.poll(() => requestLines(p).length).toBeGreaterThanOrEqual(6);
    const all = p.lines.join("");
    expect(all).toContain("refresh failed"); // the failure was logged…
    expect(all).toContain("access_token=<redacted>"); // …and so were the targets, masked
    for (const secret of [token, SEED, ...sigs]) expect(all).not.toContain(secret);
  });
});
