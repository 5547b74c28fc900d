// The nginx, Caddy and Traefik snippets of docs/deployment.md, as an operator would use them:
// taken from the doc, rendered with loopback ports and the harness's test certificate, checked
// by the distro's own `nginx -t` and `caddy validate` (Debian 12: nginx 1.22, Caddy 2.6; Traefik
// has no check command), then run in front of the proxy and a real Synapse: pass-through over
// HTTP/2, a refresh, and a /sync long-poll that the refresh wakes. Ports 18443 (nginx, then
// Traefik: the fronts run one after another) and 18444 (Caddy) are this file's own.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startHomeservers, type Homeserver, type Homeservers } from "../../scripts/homeservers.ts";
import { tlsDir } from "../../scripts/homeservers/layout.ts";
import { ensureDebianTools, ensurePythonTools } from "../../scripts/test-tools.ts";
import { ensureTls, type TlsFiles } from "../../scripts/homeservers/tls.ts";
import { login, register, type Session, waitFor } from "./helpers/client.ts";
import { curl } from "./helpers/curl.ts";
import { uploadDeviceKeys } from "./helpers/e2ee.ts";
import {
  caddyValidate,
  docBlocks,
  type Front,
  nginxTest,
  startCaddy,
  startNginx,
  startTraefik,
  traefikBinary,
  versionOf,
  type Wiring,
  writeCaddy,
  writeNginx,
  writeTraefik,
} from "./helpers/fronts.ts";
import { startHs1Proxy, type Hs1Proxy } from "./helpers/proxy.ts";

const log = (s: string): void => console.log(`[e2e docs] ${s}`);

interface FrontKind {
  name: string;
  /** A name for its files, and how many blocks of its language the doc holds. */
  lang: string;
  blocks: () => string[];
  port: number;
  version: [string, string[]];
  write(blocks: string[], w: Wiring): Promise<string>;
  check?(conf: string, dir: string): Promise<{ ok: boolean; output: string }>;
  start(conf: string, w: Wiring): Promise<Front>;
}

const NGINX: FrontKind = {
  name: "nginx",
  lang: "nginx",
  blocks: () => docBlocks("nginx"),
  port: 18443,
  version: ["nginx", ["-v"]],
  write: ([b], w) => writeNginx(b!, w),
  check: nginxTest,
  start: startNginx,
};
const CADDY: FrontKind = {
  name: "Caddy",
  lang: "caddyfile",
  blocks: () => docBlocks("caddyfile"),
  port: 18444,
  version: ["caddy", ["version"]],
  write: ([b], w) => writeCaddy(b!, w),
  check: caddyValidate,
  start: startCaddy,
};
// The Traefik section's two YAML blocks: dynamic configuration, then static.
const TRAEFIK: FrontKind = {
  name: "Traefik",
  lang: "traefik",
  blocks: () => docBlocks("yaml", "Traefik (v3, file provider)"),
  port: 18443,
  version: [traefikBinary(), ["version"]],
  write: ([dynamic, statics], w) => writeTraefik(dynamic!, statics!, w),
  start: startTraefik,
};
const FRONTS = [NGINX, CADDY, TRAEFIK];

let tls: TlsFiles;
let tmp: string;
beforeAll(async () => {
  await Promise.all([ensureDebianTools(), ensurePythonTools()]);
  tls = await ensureTls(tlsDir);
  tmp = await mkdtemp(join(tmpdir(), "docs-snippets-"));
});
afterAll(() => rm(tmp, { recursive: true, force: true }));

const wiring = (f: FrontKind, proxyPort: number, homeserverPort: number, run: string): Wiring => ({
  port: f.port,
  proxyPort,
  homeserverPort,
  certPath: tls.certPath,
  keyPath: tls.keyPath,
  dir: join(tmp, `${f.lang}-${run}`),
});

describe("the snippets pass the distro's own config check", () => {
  test("the doc has the snippets this file renders, once each", () => {
    expect([NGINX, CADDY, TRAEFIK].map((f) => f.blocks().length)).toEqual([1, 1, 2]);
  });

  test.each([NGINX, CADDY])("$name", async (f) => {
    log(`${f.name}: ${await versionOf(...f.version)}`);
    const w = wiring(f, 8009, 8008, "check");
    const checked = await f.check!(await f.write(f.blocks(), w), w.dir);
    expect(checked.ok, checked.output).toBe(true);
  });
});

describe("the snippets in front of the proxy and a real Synapse", () => {
  let servers: Homeservers;
  let hs1: Homeserver;
  let proxy: Hs1Proxy;
  let alice: Session;
  let bob: Session;

  beforeAll(async () => {
    servers = await startHomeservers({ log, lockTimeoutMs: 800_000 });
    hs1 = servers.hs1;
    // As the doc says: the front runs on this host, so --trusted-proxies loopback. Every
    // refresh must reach hs2 and deliver: no short-cache hits between the two fronts' runs.
    proxy = await startHs1Proxy(hs1, servers.caPath, {
      logLevel: "debug",
      extra: ["--trusted-proxies", "loopback", "--refresh-cache-ms", "0"],
    });
    alice = await register(hs1.clientUrl, "alice_docs");
    bob = await register(servers.hs2.clientUrl, "bob_docs");
    await uploadDeviceKeys(bob);
  }, 900_000);

  afterAll(async () => {
    await proxy?.close();
    await servers?.stop();
  }, 120_000);

  test.each(FRONTS)(
    "$name: pass-through over HTTP/2, a refresh, and the long-poll it wakes",
    async (f) => {
      const w = wiring(f, Number(new URL(proxy.url).port), Number(new URL(hs1.clientUrl).port), "live");
      log(`${f.name}: ${await versionOf(...f.version)}`);
      const front = await f.start(await f.write(f.blocks(), w), w);
      const token = alice.accessToken;
      const get = (path: string, o: Parameters<typeof curl>[3] = {}) => curl(f.port, tls.caPath, path, { token, ...o });
      try {
        // Listening is not yet routing (Traefik loads its file provider a moment later).
        await waitFor(
          `${f.name} to route to the proxy`,
          async () =>
            (await get("/_matrix/client/versions").catch(() => undefined))?.status === 200 ? true : undefined,
          30_000,
        );
        // Pass-through of a route the proxy does not intercept, over HTTP/2 to the front. The
        // proxy answered it (its X-Request-Id), and believed the front's id: one id in both logs.
        const who = await get("/_matrix/client/v3/account/whoami");
        expect([who.status, who.httpVersion, who.body.user_id]).toEqual([200, "2", alice.userId]);
        const id = who.headers["x-request-id"]!;
        expect(proxy.logs.some((l) => l.msg === "request" && l.request_id === id && l.route === "passthrough")).toBe(
          true,
        );
        // /versions reaches the proxy (it advertises MSC2638); the catch-all reaches Synapse.
        expect(
          ((await get("/_matrix/client/versions")).body.unstable_features as Record<string, boolean>)[
            "org.matrix.msc2638"
          ],
        ).toBe(true);
        expect((await get("/_matrix/key/v2/server")).body.server_name).toBe(hs1.serverName);

        // alice tracks bob (her query names him), and has a since token.
        expect(
          (await get("/_matrix/client/v3/keys/query", { method: "POST", body: { device_keys: { [bob.userId]: [] } } }))
            .status,
        ).toBe(200);
        let since = String((await get("/_matrix/client/v3/sync?timeout=0")).body.next_batch);
        since = String((await get(`/_matrix/client/v3/sync?timeout=0&since=${since}`)).body.next_batch);

        // A long-poll far longer than this test may take: only the refresh can end it in time.
        const parked = proxy.running.services.delivery.waiters.count;
        const poll = get(`/_matrix/client/v3/sync?timeout=170000&since=${since}`, { maxTimeS: 175 });
        await expect
          .poll(() => proxy.running.services.delivery.waiters.count, { timeout: 30_000 })
          .toBeGreaterThan(parked);
        // Only a real change reaches clients: bob adds a device after alice's query, so the list
        // the refresh fetches differs from the homeserver's answer the proxy saw.
        await uploadDeviceKeys(await login(servers.hs2.clientUrl, bob.userId, bob.password, `bob via ${f.name}`));
        const refresh = await get(`/_matrix/client/v3/user/${encodeURIComponent(bob.userId)}/devices/refresh`, {
          method: "POST",
          body: {},
        });
        expect([refresh.status, refresh.body]).toEqual([202, {}]);
        const woken = await poll;
        expect(woken.status).toBe(200);
        expect((woken.body.device_lists as { changed?: string[] } | undefined)?.changed).toContain(bob.userId);
      } finally {
        await front.stop();
      }
    },
    120_000,
  );
});
