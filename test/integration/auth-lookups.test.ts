// Token lookups (http/auth.ts) against a real socket: a burst of unseen tokens, as after a
// restart, reaches the homeserver's /account/whoami a bounded number at a time.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, expect, test } from "vitest";
import { createAuth } from "../../src/http/auth.ts";
import { createUpstream } from "../../src/http/upstream.ts";

let server: http.Server;
let inFlight = 0;
let peak = 0;
let calls = 0;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    calls++;
    peak = Math.max(peak, ++inFlight);
    const token = (req.headers.authorization ?? "").slice(7);
    // Hold each answer a little, so a burst really overlaps.
    setTimeout(() => {
      inFlight--;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ user_id: `@${token}:hs.test`, device_id: "D" }));
    }, 20);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

test("200 unseen tokens at once: every one resolves, at most `concurrency` whoami calls in flight", async () => {
  const { port } = server.address() as AddressInfo;
  const auth = createAuth({ upstream: createUpstream(`http://127.0.0.1:${port}`), concurrency: 8 });
  const tokens = Array.from({ length: 200 }, (_, i) => `t${i}`);
  const who = await Promise.all([...tokens, ...tokens].map((t) => auth.resolveToken(t)));
  expect(who.map((w) => w.userId)).toEqual([...tokens, ...tokens].map((t) => `@${t}:hs.test`));
  expect(calls).toBe(200); // the repeated tokens joined the lookups in flight
  expect(peak).toBe(8);
});
