// The homeserver's failure is reported as the homeserver's: when its answer to a route we
// rewrite breaks off mid-body, or is larger than we buffer, the client gets 502 M_UNKNOWN naming
// the homeserver (not our own 500, and not a 413 that blames the client's request).
// Over real sockets, through each engine.
import type { ServerResponse } from "node:http";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import type { TestEngine } from "../helpers/proxy.ts";
import { startWorld, type World } from "../helpers/world.ts";

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const engines: TestEngine[] = isBun ? ["bun", "node"] : ["node"];

// Headers promising `promised` bytes, a little JSON, then the connection cut.
function cutMidBody(res: ServerResponse, promised = 10_000): void {
  res.writeHead(200, { "content-type": "application/json", "content-length": String(promised) });
  res.write('{"device_keys":{"@bob:', () => setTimeout(() => res.socket?.destroy(), 20));
}

// A chunked answer (no content-length to refuse up front) that goes on past `bytes`.
function oversized(res: ServerResponse, bytes: number): void {
  res.writeHead(200, { "content-type": "application/json" });
  const chunk = Buffer.alloc(1 << 20, 0x20); // JSON whitespace
  let sent = 0;
  const more = () => {
    while (sent <= bytes) {
      if (res.destroyed) return;
      sent += chunk.length;
      if (!res.write(chunk)) return void res.once("drain", more);
    }
    res.end("{}");
  };
  res.write("{}");
  more();
}

describe.each(engines)("engine %s", (engine) => {
  let w: World;
  let alice: string;
  let carol: string;
  const bob = () => `@bob:${w.remote.serverName}`;
  const keysQuery = (token: string) =>
    fetch(`${w.proxy.url}/_matrix/client/v3/keys/query`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ device_keys: { [bob()]: [] } }),
    });
  const keysChanges = (token: string) =>
    fetch(`${w.proxy.url}/_matrix/client/v3/keys/changes?from=s1&to=s2`, {
      headers: { authorization: `Bearer ${token}` },
    });
  const expectHomeserverFailure = async (res: Response, reason: RegExp) => {
    const body = (await res.json()) as { errcode: string; error: string };
    expect([res.status, body.errcode]).toEqual([502, "M_UNKNOWN"]);
    expect(body.error).toMatch(/^The homeserver's /);
    expect(body.error).toMatch(reason);
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
  };

  beforeAll(async () => {
    w = await startWorld(["--engine", engine, "--refresh-cache-ms", "0"]);
    w.remote.setUser(makeUser(`@bob:${w.remote.serverName}`, { devices: ["DEV0"] }));
    alice = w.login("alice");
    carol = w.login("carol");
    // carol tracks bob (her query names him), then alice's refresh leaves a delivery pending for
    // carol and a fresh snapshot that every later /keys/query naming bob is overlaid with.
    w.hs.on(
      "/_matrix/client/v3/keys/query",
      (_req, res) => void res.end(JSON.stringify({ device_keys: {}, failures: {} })),
    );
    expect((await keysQuery(carol)).status).toBe(200);
    expect((await w.refresh(bob(), alice)).status).toBe(202);
  });
  afterAll(() => w.close());

  test("/keys/query with an overlay active: the homeserver closes mid-body", async () => {
    w.hs.on("/_matrix/client/v3/keys/query", (_req, res) => cutMidBody(res));
    await expectHomeserverFailure(await keysQuery(alice), /broke off/);
  });

  test("/keys/query with an overlay active: the homeserver's answer is larger than we buffer", async () => {
    w.hs.on("/_matrix/client/v3/keys/query", (_req, res) => oversized(res, 64 << 20));
    await expectHomeserverFailure(await keysQuery(alice), /larger than 67108864 bytes/);
  });

  test("/keys/changes with a delivery pending: the homeserver closes mid-body", async () => {
    w.hs.on("/_matrix/client/v3/keys/changes", (_req, res) => cutMidBody(res));
    await expectHomeserverFailure(await keysChanges(carol), /broke off/);
  });

  test("/keys/changes with a delivery pending: the homeserver's answer is larger than we buffer", async () => {
    w.hs.on("/_matrix/client/v3/keys/changes", (_req, res) => oversized(res, 16 << 20));
    await expectHomeserverFailure(await keysChanges(carol), /larger than 16777216 bytes/);
  });

  test("afterwards both routes work again (the pending delivery is still there for carol)", async () => {
    w.hs.on("/_matrix/client/v3/keys/changes", (_req, res) => void res.end(JSON.stringify({ changed: [], left: [] })));
    const changes = await keysChanges(carol);
    expect(changes.status).toBe(200);
    expect(((await changes.json()) as { changed: string[] }).changed).toContain(bob());
    w.hs.on(
      "/_matrix/client/v3/keys/query",
      (_req, res) => void res.end(JSON.stringify({ device_keys: {}, failures: {} })),
    );
    const query = await keysQuery(alice);
    expect(query.status).toBe(200);
    expect(Object.keys(((await query.json()) as { device_keys: Record<string, object> }).device_keys[bob()]!)).toEqual([
      "DEV0",
    ]);
  });
});
