// Bounded tracking (issue 16 item 5): a /keys/query tracks at most --max-tracked-per-query of
// the remote users it names, a device at most --max-trackers-per-device in all, and a refresh
// refused by the rate limits writes nothing. Row counts are read back from the proxy's store.
// How long the event loop stalls meanwhile is measured by scripts/bench-tracking.ts.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type FakeHomeserver, startFakeHomeserver } from "../helpers/fake-homeserver.ts";
import { startTestProxy, type TestEngine } from "../helpers/proxy.ts";

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const ENGINES: TestEngine[] = isBun ? ["bun", "node"] : ["node"];

const users = (n: number, from = 0, server = "remote.invalid") =>
  Array.from({ length: n }, (_, i) => `@u${from + i}:${server}`);
const query = (list: string[]) => JSON.stringify({ device_keys: Object.fromEntries(list.map((u) => [u, []])) });

describe.each(ENGINES)("tracking limits (engine %s)", (engine) => {
  let hs: FakeHomeserver;
  let proxy: Awaited<ReturnType<typeof startTestProxy>>;
  beforeEach(async () => {
    hs = await startFakeHomeserver();
    hs.tokens.set("alice", ["@alice:hs.test", "ALICE"]);
    hs.on("/_matrix/client/v3/keys/query", (_req, res) => {
      res.writeHead(200, { "content-type": "application/json", "content-length": 32 });
      res.end(JSON.stringify({ device_keys: {}, failures: {} }).padEnd(32));
    });
    proxy = await startTestProxy(
      hs.url,
      [
        "--max-tracked-per-query",
        "100",
        "--max-trackers-per-device",
        "150",
        "--rate-user-burst",
        "1",
        "--rate-user-per-minute",
        "1",
        "--refresh-wait-ms",
        "0",
      ],
      engine,
    );
  });
  afterEach(async () => {
    await proxy.close(1000);
    await hs.close();
  });

  const keysQuery = (body: string) =>
    fetch(`${proxy.url}/_matrix/client/v3/keys/query`, {
      method: "POST",
      headers: { authorization: "Bearer alice" },
      body,
    });
  const rows = async () => {
    await proxy.services.delivery.trackers.idle();
    return (await proxy.services.store.trackerCounts()).find((c) => c.deviceId === "ALICE")?.count ?? 0;
  };

  it("tracks at most --max-tracked-per-query users of one query, and --max-trackers-per-device in all", async () => {
    expect((await keysQuery(query([...users(50, 0, "hs.test"), ...users(1000)]))).status).toBe(200);
    expect(await rows()).toBe(100); // local users are never tracked; 100 of the 1000 remote ones
    expect((await keysQuery(query(users(1000, 1000)))).status).toBe(200);
    expect(await rows()).toBe(150);
  });

  it("relays a 4 MB query naming 150,000 made-up remote users unread: answered, nothing tracked", async () => {
    const body = query(users(150_000, 0, "made-up.invalid"));
    expect(body.length).toBeGreaterThan(4_000_000);
    const r = await keysQuery(body);
    expect(r.status).toBe(200);
    expect(hs.seen.find((s) => s.target === "/_matrix/client/v3/keys/query")?.body.length).toBe(body.length);
    expect(await rows()).toBe(0);
  });

  it("tracks only --max-tracked-per-query of a 5,000-user query it parses (under 256 KiB)", async () => {
    const body = query(users(5_000, 0, "made-up.invalid"));
    expect(body.length).toBeLessThan(256 * 1024);
    expect((await keysQuery(body)).status).toBe(200);
    expect(await rows()).toBe(100);
  });

  it("refuses a chunked query body over 256 KiB with 413 M_TOO_LARGE", async () => {
    const big = Buffer.from(query(users(20_000, 0, "made-up.invalid")));
    const stream = new ReadableStream({
      start(c) {
        c.enqueue(big);
        c.close();
      },
    });
    const r = await fetch(`${proxy.url}/_matrix/client/v3/keys/query`, {
      method: "POST",
      headers: { authorization: "Bearer alice" },
      body: stream,
      duplex: "half",
    } as RequestInit);
    expect(r.status).toBe(413);
    expect((await r.json()).errcode).toBe("M_TOO_LARGE");
  });

  it("writes no tracker for a refresh the rate limit refuses", async () => {
    const refresh = (u: string) =>
      fetch(`${proxy.url}/_matrix/client/v3/user/${encodeURIComponent(u)}/devices/refresh`, {
        method: "POST",
        headers: { authorization: "Bearer alice" },
      });
    expect((await refresh("@first:remote.invalid")).status).toBe(202);
    const refused = await refresh("@second:remote.invalid");
    expect(refused.status).toBe(429);
    expect(await proxy.services.store.trackersOf("@first:remote.invalid")).toEqual([
      { userId: "@alice:hs.test", deviceId: "ALICE" },
    ]);
    expect(await proxy.services.store.trackersOf("@second:remote.invalid")).toEqual([]);
  });
});
