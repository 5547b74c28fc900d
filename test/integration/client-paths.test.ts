// The client API prefix the proxy's own calls use (src/http/client-paths.ts), against a
// homeserver over a real socket that is upgraded, rolled back and half-configured under it.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createClientPaths } from "../../src/http/client-paths.ts";
import { createUpstream } from "../../src/http/upstream.ts";
import { startFakeHomeserver } from "../helpers/fake-homeserver.ts";
import { startLoggedProxy } from "./ops-helpers.ts";

let server: http.Server;
let url: string;
/** The prefixes the homeserver serves now; `missing` is how it answers the others. */
let serves = new Set<string>();
let missing: "html404" | "unrecognized400" = "html404";
const asked: string[] = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    asked.push(req.url!);
    const version = req.url!.split("/")[3]!;
    if (serves.has(version)) {
      res.writeHead(401, { "content-type": "application/json" });
      return void res.end('{"errcode":"M_MISSING_TOKEN","error":"Missing access token"}');
    }
    if (missing === "html404") {
      // What Synapse 1.47 (Twisted) answers for /_matrix/client/v3/…
      res.writeHead(404, { "content-type": "text/html" });
      return void res.end("<html><head><title>404 - No Such Resource</title></head></html>");
    }
    res.writeHead(400, { "content-type": "application/json" });
    res.end('{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}');
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

const whoami = { method: "GET", path: "account/whoami", headers: {}, headerTimeoutMs: 5000 };
const take = () => asked.splice(0).map((t) => t.split("/")[3]);

describe("version prefix fallback", () => {
  test("r0-only: v3 once, then r0 only; an upgrade is noticed at the next re-probe; a rollback at once", async () => {
    let now = 1_000_000;
    const paths = createClientPaths({ upstream: createUpstream(url), now: () => now, reprobeMs: 600_000 });
    serves = new Set(["r0"]);
    expect(await paths.call(whoami)).toMatchObject({
      status: 401,
      version: "r0",
      target: "/_matrix/client/r0/account/whoami",
    });
    expect(take()).toEqual(["v3", "r0"]);
    await paths.call(whoami);
    expect(take()).toEqual(["r0"]);

    serves = new Set(["v3", "r0"]); // upgraded: r0 still answers, so only a re-probe finds v3
    now += 60_000;
    await paths.call(whoami);
    expect(take()).toEqual(["r0"]);
    now += 600_000;
    expect(await paths.call(whoami)).toMatchObject({ status: 401, version: "v3" });
    expect(take()).toEqual(["v3"]);
    expect(paths.preferred).toBe("v3");

    serves = new Set(["r0"]); // rolled back
    expect(await paths.call(whoami)).toMatchObject({ version: "r0" });
    expect(take()).toEqual(["v3", "r0"]);
  });

  test("a server that stops serving r0 is followed to v3 at once, M_UNRECOGNIZED (400) counts as missing", async () => {
    const paths = createClientPaths({ upstream: createUpstream(url) });
    missing = "unrecognized400";
    serves = new Set(["r0"]);
    await paths.call(whoami);
    expect(paths.preferred).toBe("r0");
    serves = new Set(["v3"]);
    take();
    expect(await paths.call(whoami)).toMatchObject({ status: 401, version: "v3" });
    expect(take()).toEqual(["r0", "v3"]);
  });

  test("neither prefix served: the last answer comes back, the preference stays", async () => {
    const paths = createClientPaths({ upstream: createUpstream(url) });
    missing = "html404";
    serves = new Set();
    expect(await paths.call(whoami)).toMatchObject({ status: 404, version: "r0" });
    expect(paths.preferred).toBe("v3");
  });
});

test("a requester's device list that cannot be fetched is a warning, and the refresh still goes on", async () => {
  const hs = await startFakeHomeserver();
  hs.tokens.set("tok", ["@alice:hs.test", "ALICE1"]);
  hs.on("/_matrix/client/v3/devices", (_req, res) => {
    res.writeHead(500, { "content-type": "application/json" });
    res.end('{"errcode":"M_UNKNOWN","error":"Internal server error"}');
  });
  const proxy = await startLoggedProxy(hs.url, [], "info");
  try {
    // A remote target (a local one is answered before any tracking): a loopback literal, so the
    // refresh goes on to federation, where the private-address guard refuses it without a connection.
    const res = await fetch(
      `${proxy.url}/_matrix/client/v3/user/${encodeURIComponent("@bob:127.0.0.1:9")}/devices/refresh`,
      {
        method: "POST",
        headers: { authorization: "Bearer tok" },
        body: "{}",
      },
    );
    expect(res.status).toBe(502);
    expect(await res.json()).toMatchObject({
      errcode: "M_UNKNOWN",
      error: expect.stringMatching(/^Refusing to contact/),
    });
    expect(
      proxy.records().find((r) => String(r.msg).startsWith("could not list the requester's devices")),
    ).toMatchObject({
      level: "warn",
      userId: "@alice:hs.test",
      error: "/_matrix/client/v3/devices answered 500",
    });
  } finally {
    await proxy.close(1000);
    await hs.close();
  }
});
