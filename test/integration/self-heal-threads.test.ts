// Detection with --front-threads 3: a /sync served by any front-end thread has its to-device
// events read there and its clues handed to the main thread (thread-link.ts), which checks them
// with the syncing device's own token. Connections land on any thread (SO_REUSEPORT), so many
// are opened. Bun only (the front end is Bun's).
import { describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { RawClient } from "../helpers/raw-http1.ts";
import { curveKeyOf, keysQuery, olmEvent, useHealWorld, withDevice } from "../helpers/self-heal-world.ts";

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const N = 24;

describe.skipIf(!isBun)("detection on every front-end thread", () => {
  const h = useHealWorld(["--front-threads", "3", "--audit-interval-ms", "0"]);

  test("each device's Olm message from an unknown key is suspected, whichever thread served it", async () => {
    const { w } = h;
    const senders = Array.from({ length: N }, (_, i) => `@s${i}:${w.remote.serverName}`);
    const tokens = senders.map((_, i) => w.login("alice", `T${i}`));
    for (const [i, s] of senders.entries()) {
      const stale = makeUser(s, { devices: ["OLD"] });
      h.hsUsers.set(s, stale);
      w.remote.setUser(withDevice(stale, "NEW"));
      await keysQuery(w, tokens[i]!, [s]);
    }
    await expect.poll(() => senders.every((s) => w.proxy.services.heal!.views.get(s) !== undefined)).toBe(true);
    // A key none of the sender's known devices has.
    for (const [i, s] of senders.entries())
      h.toDevice.set(tokens[i]!, [olmEvent(s, curveKeyOf(makeUser(s, { devices: ["NEW"] }), "NEW"))]);
    const clients = await Promise.all(tokens.map(() => RawClient.connect(w.proxy.port)));
    clients.forEach((c, i) =>
      c.write(
        `GET /_matrix/client/v3/sync?since=x1&timeout=0 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${tokens[i]}\r\n\r\n`,
      ),
    );
    for (const c of clients) {
      expect((await c.read()).status).toBe(200);
      c.close();
    }
    await expect
      .poll(() => h.metric("resync_suspicions_total", { signal: "olm_unknown_sender_key" }), { timeout: 10_000 })
      .toBe(N);
    await w.proxy.frontThreads!.flush();
    expect(w.proxy.frontThreads!.served.reduce((a, b) => a + b, 0)).toBeGreaterThan(0); // the other threads served some
    // And each sender was fetched once.
    await expect
      .poll(() => senders.filter((s) => w.remote.count({ userId: s, endpoint: "devices" }) === 1).length, {
        timeout: 10_000,
      })
      .toBe(N);
  });
});
