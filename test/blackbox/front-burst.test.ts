// A burst of simultaneous intercepted requests against the shipped binary: each opens a
// connection from the front end to the app's unix socket at once, beyond its accept backlog.
// None may get a 502 (the bench's 1000-refresh storm once lost a quarter of them this way).
import net from "node:net";
import { once } from "node:events";
import { afterAll, beforeAll, expect, test } from "vitest";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { writeTestKey } from "../helpers/proxy.ts";
import { BINARY, ensureBinary, startServe } from "./runtimes.ts";

let hs: FakeHomeserver;
const BURST = 1500;

beforeAll(async () => {
  ensureBinary();
  hs = await startFakeHomeserver();
}, 120_000);
afterAll(() => hs.close());

function statusOf(port: number): Promise<number> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1", () =>
      s.write("GET /_matrix/client/versions HTTP/1.1\r\nHost: hs.test\r\nConnection: close\r\n\r\n"),
    );
    let head = "";
    s.on("data", (c: Buffer) => (head += c.toString("latin1")));
    s.on("close", () => resolve(Number(head.split(" ")[1] ?? 0)));
    s.on("error", () => resolve(0));
  });
}

test(`${BURST} simultaneous intercepted requests all get the homeserver's answer`, { timeout: 60_000 }, async () => {
  const key = writeTestKey();
  const p = await startServe({ name: "binary", command: [BINARY] }, [
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
    const statuses = await Promise.all(Array.from({ length: BURST }, () => statusOf(p.port)));
    const counts: Record<number, number> = {};
    for (const s of statuses) counts[s] = (counts[s] ?? 0) + 1;
    expect(counts).toEqual({ 200: BURST });
  } finally {
    p.child.kill("SIGTERM");
    await once(p.child, "exit");
  }
});
