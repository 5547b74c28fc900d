// Long-polls each hold an upstream connection for their whole timeout. With more of them than
// any pool cap, later requests (short ones too) must still reach the homeserver at once.
import net from "node:net";
import { afterAll, beforeAll, expect, test } from "vitest";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { startTestProxy } from "../helpers/proxy.ts";

let hs: FakeHomeserver;
let proxy: Awaited<ReturnType<typeof startTestProxy>>;
let held = 0;
const POLLS = 700; // above the 512 sockets the upstream pool once allowed

beforeAll(async () => {
  hs = await startFakeHomeserver();
  hs.on("/_matrix/client/v3/sync?held", () => void held++); // never answered
  proxy = await startTestProxy(hs.url);
});
afterAll(async () => {
  await proxy.close();
  await hs.close();
});

test(`${POLLS} held long-polls all reach the homeserver, and a short request still gets through`, {
  timeout: 60_000,
}, async () => {
  const sockets: net.Socket[] = [];
  try {
    for (let i = 0; i < POLLS; i++) {
      const s = net.connect(proxy.port, "127.0.0.1");
      s.on("error", () => {});
      s.write(`GET /_matrix/client/v3/sync?held&n=${i}&timeout=120000 HTTP/1.1\r\nHost: hs.test\r\n\r\n`);
      sockets.push(s);
    }
    await expect.poll(() => held, { timeout: 30_000 }).toBe(POLLS);
    const res = await fetch(`${proxy.url}/_matrix/client/versions`);
    expect(res.status).toBe(200);
  } finally {
    for (const s of sockets) s.destroy();
  }
});
