// Graceful shutdown of the real process, under every runtime we ship: SIGTERM stops new
// connections, lets a long-poll in flight finish, and exits 0; a second signal exits at once;
// past --shutdown-timeout-ms, what is left is cut and the process still exits 0.
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { writeTestKey } from "../helpers/proxy.ts";
import { ensureBinary, RUNTIMES, startServe } from "./runtimes.ts";

let hs: FakeHomeserver;
beforeAll(async () => {
  ensureBinary();
  hs = await startFakeHomeserver();
  // The homeserver's long-poll: `?answer=ms` answers after that long; without it, never.
  hs.on("/_matrix/client/v3/sync", (req, res) => {
    const after = new URL(req.url!, "http://x").searchParams.get("answer");
    if (after === null) return;
    setTimeout(() => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ next_batch: "s2", rooms: {} }));
    }, Number(after));
  });
}, 120_000);
afterAll(() => hs.close());

async function start(rt: (typeof RUNTIMES)[number], extra: string[] = []) {
  const key = writeTestKey();
  return startServe(rt, [
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
    ...extra,
  ]);
}

/** Open a long-poll through the proxy and resolve once the homeserver holds it. */
async function longPoll(port: number, query: string) {
  const tag = `lp${Math.random().toString(36).slice(2)}`;
  const events: string[] = [];
  const result = fetch(
    `http://127.0.0.1:${port}/_matrix/client/v3/sync?since=s1&timeout=30000&tag=${tag}&${query}`,
  ).then(
    async (r) => {
      const body = await r.text();
      events.push("response");
      return { status: r.status, body };
    },
    (e: unknown) => {
      events.push("error");
      return { status: 0, body: String(e) };
    },
  );
  await expect.poll(() => hs.seen.some((s) => s.target.includes(tag)), { timeout: 10_000 }).toBe(true);
  return { result, events };
}

// process.kill, not child.kill: Deno's child_process reports a child it signalled with
// child.kill() as killed by that signal (code null) even when the child handled it and exited 0.
const signal = (child: ChildProcess, sig: NodeJS.Signals) => process.kill(child.pid!, sig);
const exited = (child: ChildProcess) => once(child, "exit").then(([code]) => code as number | null);
const refused = (port: number) =>
  fetch(`http://127.0.0.1:${port}/_resync/healthz`).then(
    () => false,
    () => true,
  );

describe.each(RUNTIMES)("$name", (rt) => {
  test("SIGTERM during a long-poll: no new connections, the long-poll gets its 200, then exit 0", async () => {
    const p = await start(rt, ["--shutdown-timeout-ms", "20000"]);
    const lp = await longPoll(p.port, "answer=2000");
    const exit = exited(p.child).then((code) => (lp.events.push("exit"), code));
    signal(p.child, "SIGTERM");
    await expect.poll(() => p.stderr().includes("shutting down"), { timeout: 10_000 }).toBe(true);
    expect(await refused(p.port)).toBe(true);
    const r = await lp.result;
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ next_batch: "s2", rooms: {} });
    expect(await exit).toBe(0);
    expect(lp.events).toEqual(["response", "exit"]);
    expect(p.stderr()).toContain('"msg":"stopped"');
    expect(p.stderr()).not.toContain("deadline passed");
  });

  test("a second signal exits at once, cutting the long-poll", async () => {
    const p = await start(rt, ["--shutdown-timeout-ms", "600000"]);
    const lp = await longPoll(p.port, "hang=1");
    const exit = exited(p.child);
    signal(p.child, "SIGTERM");
    await expect.poll(() => p.stderr().includes("shutting down"), { timeout: 10_000 }).toBe(true);
    signal(p.child, "SIGINT");
    expect(await exit).toBe(130); // 128 + SIGINT
    expect(p.stderr()).toContain("second signal");
    expect((await lp.result).status).toBe(0);
  });

  test("past --shutdown-timeout-ms the long-poll is cut and the process still exits 0", async () => {
    const p = await start(rt, ["--shutdown-timeout-ms", "300"]);
    const lp = await longPoll(p.port, "hang=1");
    const exit = exited(p.child);
    signal(p.child, "SIGTERM");
    expect(await exit).toBe(0);
    expect(p.stderr()).toContain("deadline passed");
    expect((await lp.result).status).toBe(0);
  });
});
