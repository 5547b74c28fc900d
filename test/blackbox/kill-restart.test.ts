// Durable state survives `kill -9`: a pending retry resumes and a pending delivery still
// arrives after the process is killed and started again on the same data dir.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { once } from "node:events";
import { afterAll, beforeAll, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { startFakeRemote, type FakeRemote } from "../helpers/fake-remote.ts";
import { writeTestKey } from "../helpers/proxy.ts";
import { createTestCa, type TestCa } from "../helpers/tls.ts";
import { OUR_KEY_ID, OUR_PUBLIC_KEY } from "../helpers/world.ts";
import { RUNTIMES, startServe } from "./runtimes.ts";

let hs: FakeHomeserver;
let remote: FakeRemote;
let ca: TestCa;
const bun = RUNTIMES.find((r) => r.name === "bun")!;

beforeAll(async () => {
  ca = createTestCa();
  hs = await startFakeHomeserver("hs.test");
  remote = await startFakeRemote({ ca, trustedKeys: { "hs.test": { [OUR_KEY_ID]: OUR_PUBLIC_KEY } } });
  hs.tokens.set("alice-token", ["@alice:hs.test", "ALICE1"]);
  let n = 0;
  hs.on("/_matrix/client/v3/sync", (_req, res) => void res.end(JSON.stringify({ next_batch: `t${++n}` })));
});
afterAll(async () => {
  await remote.close();
  await hs.close();
  ca.cleanup();
});

test("kill -9 loses neither a scheduled retry nor a pending delivery", { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "kill-"));
  writeFileSync(join(dir, "ca.pem"), ca.caPem);
  const args = [
    "--upstream",
    hs.url,
    "--server-name",
    "hs.test",
    "--signing-key",
    writeTestKey(dir),
    "--listen",
    "127.0.0.1:0",
    "--data-dir",
    join(dir, "data"),
    "--federation-ca",
    join(dir, "ca.pem"),
    "--federation-allow-cidrs",
    "127.0.0.0/8",
    "--retry-initial-ms",
    "1500",
    "--retry-max-ms",
    "3000",
    "--log-level",
    "info",
  ];
  const bob = `@bob:${remote.serverName}`;
  const flaky = `@flaky:${remote.serverName}`;
  remote.setUser(makeUser(bob));
  remote.setUser(makeUser(flaky, { devices: ["F1", "F2"] }));
  remote.setBehaviour({ kind: "status", status: 503 }, { userId: flaky });

  const first = await startServe(bun, args);
  const call = (port: number, path: string, init: RequestInit = {}) =>
    fetch(`http://127.0.0.1:${port}${path}`, { ...init, headers: { authorization: "Bearer alice-token" } });
  expect(
    (await call(first.port, `/_matrix/client/v3/user/${encodeURIComponent(bob)}/devices/refresh`, { method: "POST" }))
      .status,
  ).toBe(202);
  expect(
    (await call(first.port, `/_matrix/client/v3/user/${encodeURIComponent(flaky)}/devices/refresh`, { method: "POST" }))
      .status,
  ).toBe(502);
  first.child.kill("SIGKILL");
  const [, signal] = await once(first.child, "exit");
  expect(signal).toBe("SIGKILL");

  remote.clearBehaviours();
  const flakyBefore = remote.count({ userId: flaky, endpoint: "devices" });
  const second = await startServe(bun, args);
  try {
    // The pending delivery of bob to alice's device was written before the 202, so it survived.
    const synced = await (await call(second.port, "/_matrix/client/v3/sync?since=t0&timeout=0")).json();
    expect(synced.device_lists.changed).toContain(bob);
    // The retry of flaky resumes by itself: no client asks again.
    await remote.waitFor(() => remote.count({ userId: flaky, endpoint: "devices" }) > flakyBefore, 20_000);
    hs.on(
      "/_matrix/client/v3/keys/query",
      (_req, res) => void res.end(JSON.stringify({ device_keys: { [flaky]: {} }, failures: {} })),
    );
    await expect
      .poll(
        async () =>
          Object.keys(
            (
              (await (
                await fetch(`http://127.0.0.1:${second.port}/_matrix/client/v3/keys/query`, {
                  method: "POST",
                  headers: { authorization: "Bearer alice-token" },
                  body: JSON.stringify({ device_keys: { [flaky]: [] } }),
                })
              ).json()) as { device_keys: Record<string, object> }
            ).device_keys[flaky]!,
          ).sort(),
        { timeout: 10_000 },
      )
      .toEqual(["F1", "F2"]);
  } finally {
    second.child.kill("SIGTERM");
    await once(second.child, "exit");
  }
});
