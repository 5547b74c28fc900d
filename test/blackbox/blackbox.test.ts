import { once } from "node:events";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { writeTestKey } from "../helpers/proxy.ts";
import { rawRequest } from "../helpers/raw-http.ts";
import { ensureBinary, run, RUNTIMES, startServe } from "./runtimes.ts";

let hs: FakeHomeserver;
beforeAll(async () => {
  ensureBinary();
  hs = await startFakeHomeserver();
}, 120_000);
afterAll(() => hs.close());

describe.each(RUNTIMES)("$name", (rt) => {
  test("--version and --help", () => {
    const v = run(rt, ["--version"]);
    expect(v.status).toBe(0);
    expect(v.stdout).toMatch(/^matrix-resync-proxy \d+\.\d+\.\d+/);
    const h = run(rt, ["--help"]);
    expect(h.status).toBe(0);
    for (const flag of [
      "--upstream",
      "--server-name",
      "--signing-key",
      "--listen",
      "--data-dir",
      "--metrics-listen",
      "--federation-ca",
      "--federation-allow-cidrs",
      "--dns-server",
      "--trusted-proxies",
      "--refresh-wait-ms",
      "--refresh-cache-ms",
      "--retry-initial-ms",
      "--retry-max-ms",
      "--log-level",
    ])
      expect(h.stdout).toContain(flag);
  });

  test("a bad value exits non-zero with one line naming the flag", () => {
    const r = run(rt, [
      "--upstream",
      "http://127.0.0.1:1",
      "--server-name",
      "x",
      "--signing-key",
      "/k",
      "--refresh-wait-ms",
      "never",
    ]);
    expect(r.status).not.toBe(0);
    expect(r.stderr.trim().split("\n")).toEqual([
      'matrix-resync-proxy: --refresh-wait-ms: expected an integer from 0 to 60000, got "never"',
    ]);
    const e = run(rt, [], {
      RESYNC_UPSTREAM: "http://127.0.0.1:1",
      RESYNC_SERVER_NAME: "x",
      RESYNC_SIGNING_KEY: "/k",
      RESYNC_LOG_LEVEL: "chatty",
    });
    expect(e.status).not.toBe(0);
    expect(e.stderr).toContain("RESYNC_LOG_LEVEL: expected one of");
  });

  test("serves: proxies raw targets, intercepts /versions, answers healthcheck, exits 0 on SIGTERM", async () => {
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
    ]);
    try {
      const raw = await rawRequest(
        p.port,
        "GET /_matrix/client/v3/a/../b%2Fc HTTP/1.1\r\nHost: hs.test\r\nConnection: close\r\n\r\n",
      );
      expect(raw.status).toBe(401);
      expect(hs.seen.at(-1)!.target).toBe("/_matrix/client/v3/a/../b%2Fc");
      const versions = await (await fetch(`http://127.0.0.1:${p.port}/_matrix/client/versions`)).json();
      expect(versions.unstable_features["org.matrix.msc2638"]).toBe(true);
      // A whole client session: register, log in, sync, send a message, see it in the next sync.
      const base = `http://127.0.0.1:${p.port}/_matrix/client/v3`;
      const user = `u${Math.random().toString(36).slice(2, 8)}`;
      const post = (path: string, body: unknown, token?: string, method = "POST") =>
        fetch(base + path, {
          method,
          headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
          body: JSON.stringify(body),
        }).then((r) => r.json());
      await post("/register", { username: user, password: "pw" });
      const { access_token: token } = await post("/login", {
        type: "m.login.password",
        identifier: { type: "m.id.user", user },
        password: "pw",
      });
      const auth = { authorization: `Bearer ${token}` };
      const first = await (await fetch(`${base}/sync?timeout=0`, { headers: auth })).json();
      const waiting = fetch(`${base}/sync?since=${first.next_batch}&timeout=10000`, { headers: auth }).then((r) =>
        r.json(),
      );
      expect(
        (await post("/rooms/!r:hs.test/send/m.room.message/1", { msgtype: "m.text", body: rt.name }, token, "PUT"))
          .event_id,
      ).toMatch(/^\$/);
      expect((await waiting).timeline.at(-1).content.body).toBe(rt.name);
      const hc = run(rt, ["healthcheck", "--listen", `127.0.0.1:${p.port}`]);
      expect(hc.status).toBe(0);
    } finally {
      p.child.kill("SIGTERM");
      const [code] = await once(p.child, "exit");
      expect(code).toBe(0);
    }
    expect(run(rt, ["healthcheck", "--listen", `127.0.0.1:${p.port}`]).status).toBe(1);
  });
});

describe("compiled binary, --front-threads", () => {
  test("the embedded worker entrypoint starts: every connection is answered, SIGTERM drains all threads", async () => {
    const key = writeTestKey();
    const rt = RUNTIMES[0]!;
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
      "--front-threads",
      "3",
    ]);
    try {
      expect(p.stderr()).toContain('"frontThreads":3');
      // Separate connections, so the kernel spreads them over the three listeners.
      const answers = await Promise.all(
        Array.from({ length: 24 }, () =>
          rawRequest(p.port, "GET /_matrix/client/versions HTTP/1.1\r\nHost: hs.test\r\nConnection: close\r\n\r\n"),
        ),
      );
      for (const a of answers) expect(a.status).toBe(200);
    } finally {
      p.child.kill("SIGTERM");
      const [code] = await once(p.child, "exit");
      expect(code).toBe(0);
    }
    expect(p.stderr()).not.toContain("front-end thread failed");
  });
});
