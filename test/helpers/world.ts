// A whole test world over real sockets: a fake homeserver (client API), a fake remote
// homeserver (federation, HTTPS with a test CA, verifying our X-Matrix signatures), and the
// proxy in between, configured through its real CLI flags.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startFakeHomeserver, type FakeHomeserver } from "./fake-homeserver.ts";
import { startFakeRemote, type FakeRemote } from "./fake-remote.ts";
import { startTestProxy } from "./proxy.ts";
import { createTestCa, type TestCa } from "./tls.ts";

// The key in writeTestKey(): the spec's test seed, version "1".
export const OUR_KEY_ID = "ed25519:1";
export const OUR_PUBLIC_KEY = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI";

export interface World {
  hs: FakeHomeserver;
  remote: FakeRemote;
  ca: TestCa;
  caPath: string;
  proxy: Awaited<ReturnType<typeof startTestProxy>>;
  /** The proxy's --data-dir (its SQLite store, unless --database says otherwise). */
  dataDir: string;
  /** Register a local user with a device; returns its access token. */
  login(localpart: string, deviceId?: string): string;
  refresh(userId: string, token: string, opts?: { prefix?: string; method?: string }): Promise<Response>;
  /** Stops the proxy, runs `whileStopped` if given, and starts it again with more flags. */
  restartProxy(extra?: string[], whileStopped?: () => Promise<void>): Promise<void>;
  close(): Promise<void>;
}

export async function startWorld(extra: string[] = []): Promise<World> {
  const ca = createTestCa();
  const dir = mkdtempSync(join(tmpdir(), "world-"));
  const caPath = join(dir, "ca.pem");
  writeFileSync(caPath, ca.caPem);
  const hs = await startFakeHomeserver("hs.test");
  const remote = await startFakeRemote({ ca, trustedKeys: { "hs.test": { [OUR_KEY_ID]: OUR_PUBLIC_KEY } } });
  const dataDir = join(dir, "data");
  const flags = () => [
    "--federation-ca",
    caPath,
    "--federation-allow-cidrs",
    "127.0.0.0/8",
    "--data-dir",
    dataDir,
    "--refresh-wait-ms",
    "3000",
    ...extra,
  ];
  const world: World = {
    hs,
    remote,
    ca,
    caPath,
    proxy: await startTestProxy(hs.url, flags()),
    dataDir,
    login(localpart, deviceId = `${localpart.toUpperCase()}DEV`) {
      const token = `token_${localpart}_${deviceId}`;
      hs.tokens.set(token, [`@${localpart}:hs.test`, deviceId]);
      return token;
    },
    refresh(userId, token, opts = {}) {
      const prefix = opts.prefix ?? "/_matrix/client/v3";
      const path = prefix.includes("msc2638/user")
        ? prefix.replace("{u}", encodeURIComponent(userId))
        : `${prefix}/user/${encodeURIComponent(userId)}/devices/refresh`;
      return fetch(world.proxy.url + path, {
        method: opts.method ?? "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: (opts.method ?? "POST") === "POST" ? "{}" : undefined,
      });
    },
    async restartProxy(more = [], whileStopped) {
      await world.proxy.close();
      await whileStopped?.();
      world.proxy = await startTestProxy(hs.url, [...flags(), ...more]);
    },
    async close() {
      await world.proxy.close();
      await remote.close();
      await hs.close();
      ca.cleanup();
    },
  };
  return world;
}
