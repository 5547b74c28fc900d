import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { startTestProxy } from "../helpers/proxy.ts";
import { startWorld, type World } from "../helpers/world.ts";

let w: World;
let asker: string;
const user = (name: string) => `@${name}:${w.remote.serverName}`;

beforeAll(async () => {
  // refresh-wait 1500 ms; a federation request may take 4 s; backoff starts at 2 s.
  w = await startWorld([
    "--refresh-wait-ms",
    "1500",
    "--federation-timeout-ms",
    "4000",
    "--retry-initial-ms",
    "2000",
    "--retry-max-ms",
    "4000",
    "--probe-interval-ms",
    "60000",
    "--rate-user-burst",
    "1000",
  ]);
  asker = w.login("asker");
});
afterAll(() => w.close());

describe("slow and dead remotes", () => {
  test("a remote that hangs: 202 at about --refresh-wait-ms, well before the federation timeout", async () => {
    const u = user("slow");
    w.remote.setUser(makeUser(u));
    const held = w.remote.hold({ userId: u, endpoint: "devices" });
    const started = Date.now();
    const res = await w.refresh(u, asker);
    const took = Date.now() - started;
    expect(res.status, await res.clone().text()).toBe(202);
    expect(took).toBeGreaterThanOrEqual(1400);
    expect(took).toBeLessThan(3900); // answered by the wait deadline, not by the 4 s timeout
    held.release();
    // The fetch went on after the 202, and its result is kept.
    await expect.poll(async () => await w.proxy.services.store.getSnapshot(u), { timeout: 5000 }).toBeDefined();
  });

  test("a timeout known within the wait → 504 with next_retry_in_ms (federation timeout < wait)", async () => {
    const p = await startTestProxy(w.hs.url, [
      "--federation-ca",
      w.caPath,
      "--federation-allow-cidrs",
      "127.0.0.0/8",
      "--refresh-wait-ms",
      "3000",
      "--federation-timeout-ms",
      "500",
      "--retry-initial-ms",
      "60000",
    ]);
    try {
      const u = user("hangs");
      w.remote.setBehaviour({ kind: "hang" }, { userId: u });
      const res = await fetch(`${p.url}/_matrix/client/v3/user/${encodeURIComponent(u)}/devices/refresh`, {
        method: "POST",
        headers: { authorization: `Bearer ${asker}` },
      });
      expect(res.status).toBe(504);
      const body = await res.json();
      expect(body.errcode).toBe("M_UNKNOWN");
      expect(body.next_retry_in_ms).toBeGreaterThan(0);
      expect(await p.services.store.getRetry(u)).toBeDefined();
    } finally {
      await p.close();
    }
  });

  test("a backed-off destination: no federation request until the probe interval allows one", async () => {
    const p = await startTestProxy(w.hs.url, [
      "--federation-ca",
      w.caPath,
      "--federation-allow-cidrs",
      "127.0.0.0/8",
      "--retry-initial-ms",
      "60000",
      "--probe-interval-ms",
      "60000",
    ]);
    const refresh = (u: string) =>
      fetch(`${p.url}/_matrix/client/v3/user/${encodeURIComponent(u)}/devices/refresh`, {
        method: "POST",
        headers: { authorization: `Bearer ${asker}` },
      });
    try {
      w.remote.setBehaviour({ kind: "status", status: 503 });
      expect((await refresh(user("down1"))).status).toBe(502);
      expect((await p.services.store.getBackoff(w.remote.serverName))?.failures).toBe(1);
      w.remote.clearBehaviours();
      w.remote.setUser(makeUser(user("down2")));
      const before = w.remote.requests.length;
      const res = await refresh(user("down2"));
      expect(res.status).toBe(502);
      const body = await res.json();
      expect(body.error).toMatch(/backoff/);
      expect(body.next_retry_in_ms).toBeGreaterThan(40_000); // 60 s backoff × jitter 0.8–1.4
      expect(w.remote.requests.length).toBe(before); // not contacted
      expect((await p.services.store.getRetry(user("down2")))?.requestedBy).toContain("@asker:hs.test");
    } finally {
      w.remote.clearBehaviours();
      await p.close();
    }
  });

  test("a background check that fails backs the destination off, but an explicit refresh still gets its probe", async () => {
    // Self-healing checks (suspicions, the audit) run unseen; a person asking right after one
    // failed must not be told "in backoff" without the server having been tried for them.
    const p = await startTestProxy(w.hs.url, [
      "--federation-ca",
      w.caPath,
      "--federation-allow-cidrs",
      "127.0.0.0/8",
      "--retry-initial-ms",
      "60000",
      "--probe-interval-ms",
      "60000",
    ]);
    const refresh = (u: string) =>
      fetch(`${p.url}/_matrix/client/v3/user/${encodeURIComponent(u)}/devices/refresh`, {
        method: "POST",
        headers: { authorization: `Bearer ${asker}` },
      });
    try {
      w.remote.setBehaviour({ kind: "status", status: 503 });
      expect(await p.services.resyncer.background(user("bg1"), { trigger: "audit", why: "test" })).toBe("started");
      await expect.poll(async () => (await p.services.store.getBackoff(w.remote.serverName))?.failures).toBe(1);
      expect(await p.services.resyncer.background(user("bg2"), { trigger: "audit", why: "test" })).toBe("backoff");
      w.remote.clearBehaviours();
      w.remote.setUser(makeUser(user("bg3")));
      const before = w.remote.requests.length;
      expect((await refresh(user("bg3"))).status).toBe(202);
      expect(w.remote.requests.length).toBeGreaterThan(before);
      expect(await p.services.store.getBackoff(w.remote.serverName)).toBeUndefined();
    } finally {
      w.remote.clearBehaviours();
      await p.close();
    }
  });

  test("an explicit refresh may probe a backed-off destination, and a success resets the backoff", async () => {
    const p = await startTestProxy(w.hs.url, [
      "--federation-ca",
      w.caPath,
      "--federation-allow-cidrs",
      "127.0.0.0/8",
      "--retry-initial-ms",
      "60000",
      "--probe-interval-ms",
      "0",
    ]);
    const refresh = (u: string) =>
      fetch(`${p.url}/_matrix/client/v3/user/${encodeURIComponent(u)}/devices/refresh`, {
        method: "POST",
        headers: { authorization: `Bearer ${asker}` },
      });
    try {
      w.remote.setBehaviour({ kind: "status", status: 503 });
      expect((await refresh(user("probe1"))).status).toBe(502);
      w.remote.clearBehaviours();
      w.remote.setUser(makeUser(user("probe2")));
      expect((await refresh(user("probe2"))).status).toBe(202);
      expect(await p.services.store.getBackoff(w.remote.serverName)).toBeUndefined();
    } finally {
      await p.close();
    }
  });

  test("a user whose server resolves to a private address is refused without a connection", async () => {
    const p = await startTestProxy(w.hs.url, ["--federation-ca", w.caPath]); // no allow-cidrs
    try {
      const before = w.remote.requests.length;
      const res = await fetch(
        `${p.url}/_matrix/client/v3/user/${encodeURIComponent(user("private"))}/devices/refresh`,
        { method: "POST", headers: { authorization: `Bearer ${asker}` } },
      );
      expect(res.status).toBe(502);
      const body = await res.json();
      expect(body.errcode).toBe("M_UNKNOWN");
      expect(body.error).toMatch(/private|blocked|refus/i);
      expect(body.next_retry_in_ms).toBeUndefined();
      expect(w.remote.requests.length).toBe(before);
    } finally {
      await p.close();
    }
  });
});

test("hostile user ids and paths never produce a 500", { timeout: 120_000 }, async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.string(),
        fc.string({ unit: "binary" }),
        fc.constantFrom("..", "%", "%00", "@a:b:c", "@a:[::1]:1", "@%2F:x", "\u0000"),
      ),
      fc.constantFrom("/_matrix/client/v3", "/_matrix/client/r0", "/_matrix/client/unstable/org.matrix.msc2638"),
      async (id, prefix) => {
        const res = await fetch(`${w.proxy.url}${prefix}/user/${encodeURIComponent(id)}/devices/refresh`, {
          method: "POST",
          headers: { authorization: `Bearer ${asker}` },
        });
        await res.arrayBuffer();
        // 502/504 are honest answers about a remote; a 500 would be our own failure.
        expect([400, 401, 404, 429, 202, 502, 504]).toContain(res.status);
      },
    ),
    { numRuns: 150 },
  );
  // Raw, unencoded bytes in the segment as well.
  for (const seg of ["%", "%zz", "a%2Fb", "%40a%3A%5B%3A%3A1", "..%2F..", "@a:b/../../x"]) {
    const res = await fetch(`${w.proxy.url}/_matrix/client/v3/user/${seg}/devices/refresh`, {
      method: "POST",
      headers: { authorization: `Bearer ${asker}` },
    });
    expect(res.status).not.toBe(500);
  }
});
