// Self-healing's reading thread (src/view-worker.ts) starts in what ships: the compiled binary
// embeds it as an entrypoint of its own, and Bun and Deno run it from source. A /keys/query
// answer that streams through is learned from, with no fallback warning.
import { once } from "node:events";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { writeTestKey } from "../helpers/proxy.ts";
import { ensureBinary, RUNTIMES, startServe } from "./runtimes.ts";

let hs: FakeHomeserver;
const bob = "@bob:remote.test";
beforeAll(async () => {
  ensureBinary();
  hs = await startFakeHomeserver();
  hs.tokens.set("tok_alice", ["@alice:hs.test", "ALICE"]);
  hs.on("/_matrix/client/v3/keys/query", (_req, res) => {
    const body = JSON.stringify({
      device_keys: { [bob]: { D: { user_id: bob, device_id: "D", keys: { "curve25519:D": "c", "ed25519:D": "e" } } } },
      failures: {},
    });
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
}, 120_000);
afterAll(() => hs.close());

describe.each(RUNTIMES)("$name", (rt) => {
  test("a streamed /keys/query answer is read in the reading thread and its view recorded", async () => {
    const key = writeTestKey();
    const p = await startServe(rt, [
      "--upstream",
      hs.url,
      "--server-name",
      "hs.test",
      "--signing-key",
      key,
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      `${key}.data`,
      "--metrics-listen",
      "127.0.0.1:0",
      "--log-level",
      "debug",
    ]);
    try {
      const ops = /"metrics":"([^"]+)"/.exec(p.stderr())![1]!;
      const res = await fetch(`http://127.0.0.1:${p.port}/_matrix/client/v3/keys/query`, {
        method: "POST",
        headers: { authorization: "Bearer tok_alice", "content-type": "application/json" },
        body: JSON.stringify({ device_keys: { [bob]: [] } }),
      });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
      await expect
        .poll(
          async () => /^resync_homeserver_views (\S+)$/m.exec(await (await fetch(`http://${ops}/metrics`)).text())?.[1],
          { timeout: 10_000 },
        )
        .toBe("1");
    } finally {
      p.child.kill("SIGTERM");
      const [code] = await once(p.child, "exit");
      expect(code).toBe(0);
    }
    expect(p.stderr()).not.toContain("reading thread is unavailable");
  }, 60_000);
});
