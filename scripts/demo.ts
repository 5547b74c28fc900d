// `npm run demo`: the bug MSC2638 exists for, and the fix, told step by step with two real
// Synapse homeservers and the proxy on loopback. Everything it starts is stopped at the end,
// on failure and on Ctrl-C too. Timings per phase are printed last.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { appendFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  homeserverOverrides,
  lockPath,
  restartHomeserver,
  startHomeservers,
  stopAllHomeservers,
  type Homeserver,
  type Homeservers,
} from "./homeservers.ts";
import { installSynapse } from "./homeservers/install.ts";
import { lockOwner, releaseLock } from "./homeservers/lock.ts";
import { sync, type Session } from "../test/e2e/helpers/client.ts";
import { refreshDevices, startHs1Proxy, type Hs1Proxy } from "../test/e2e/helpers/proxy.ts";
import { makeBobStale } from "../test/e2e/helpers/stale.ts";
import {
  crossSigningKeyId,
  federationDeviceRequests,
  keysView,
  logOffset,
  meetAliceAndBob,
  type UserKeysView,
} from "../test/e2e/helpers/story.ts";

const started = Date.now();
const phases: [string, number][] = [];
let failures = 0;
let servers: Homeservers | undefined; // stopped through the pid files, see cleanUp
let proxy: Hs1Proxy | undefined;
let auditProxy: Hs1Proxy | undefined;
let workDir: string | undefined;
let interrupted = false;

const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
const say = (s: string): void => console.log(`   ${s}`);
const detail = (s: string): void => console.log(`     · ${s}`);
const heading = (s: string): void => console.log(`\n${s}`);
function check(ok: boolean, what: string): void {
  console.log(`   ${ok ? "✓" : "✗"} ${what}`);
  if (!ok) failures++;
}
async function phase<T>(name: string, run: () => Promise<T>): Promise<T> {
  const t = Date.now();
  try {
    return await run();
  } finally {
    phases.push([name, Date.now() - t]);
  }
}
const devices = (n: number): string => `${n} device${n === 1 ? "" : "s"}`;
const short = (keyId: string | undefined): string => (keyId ? `${keyId.slice(0, 16)}…` : "none");
const describeView = (v: UserKeysView): string =>
  `${devices(v.deviceIds.length)} (${v.deviceIds.join(", ")}), master key ${short(v.masterKeyId)}`;

async function story(): Promise<Homeserver> {
  const { hs1, hs2: hs2First } = servers!;
  heading("1–4. alice (hs1) and bob (hs2) meet in an encrypted room");
  const s = await meetAliceAndBob(hs1, hs2First, say);
  const viaProxy: Session = { ...s.alice, clientUrl: proxy!.url };
  say(`alice's client talks to the proxy at ${proxy!.url}; before any refresh it shows what hs1 says:`);
  detail(`bob has ${describeView(await keysView(viaProxy, s.bob.userId))}`);
  const since = (await sync(viaProxy)).next_batch;

  heading("5. bob adds a device and resets his cross-signing keys; hs1 never hears of it");
  say("hs2 is restarted with federation sending off (send_federation: false), so it cannot tell hs1.");
  say("Catch-up cannot heal this: it is the sending side's job, and hs2 has no sender now.");
  const stale = await makeBobStale({
    hs1,
    hs2: hs2First,
    alice: s.alice,
    bob: s.bob,
    newCrossSigning: true,
    log: detail,
  });
  const hs2 = stale.hs2;
  say(`bob logged in device ${stale.newDevice.deviceId} and uploaded new cross-signing keys on hs2.`);

  heading("6. the bug: hs1 serves a stale copy");
  const before = await keysView(s.alice, s.bob.userId);
  const real = stale.remote.devices.length;
  say(`hs1 still believes bob has ${devices(before.deviceIds.length)}; bob really has ${real}.`);
  detail(`hs1:  ${describeView(before)}`);
  detail(
    `hs2:  ${devices(real)} (${stale.remote.devices
      .map((d) => d.device_id)
      .sort()
      .join(", ")}), master key ${short(crossSigningKeyId(stale.crossSigning!))}`,
  );
  check(!before.deviceIds.includes(stale.newDevice.deviceId), "hs1 lacks bob's new device");
  check(before.masterKeyId === crossSigningKeyId(s.bobCrossSigning), "hs1 still has bob's old master key");

  heading("7. alice asks the proxy to refresh bob's device list (MSC2638)");
  const offset = await logOffset(hs2.logPath);
  say(`POST ${proxy!.url}/_matrix/client/v3/user/${encodeURIComponent(s.bob.userId)}/devices/refresh`);
  const answer = await refreshDevices(proxy!.url, s.alice.accessToken, s.bob.userId);
  check(answer.status === 202, `the proxy answered ${answer.status} ${JSON.stringify(answer.body)}`);

  heading("8. the fix: what alice's client sees now");
  const after = await keysView(viaProxy, s.bob.userId);
  say(`through the proxy, bob has ${describeView(after)}`);
  check(
    after.deviceIds.includes(stale.newDevice.deviceId),
    `the proxy's /keys/query lists bob's new device ${stale.newDevice.deviceId}`,
  );
  check(after.masterKeyId === crossSigningKeyId(stale.crossSigning!), "…and bob's new master key");
  const next = await sync(viaProxy, since, 5_000);
  const changed = next.device_lists?.changed ?? [];
  check(
    changed.includes(s.bob.userId),
    `alice's next /sync through the proxy says device_lists.changed = ${JSON.stringify(changed)}, so her client re-fetches bob's keys`,
  );
  const direct = await keysView(s.alice, s.bob.userId);
  check(
    !direct.deviceIds.includes(stale.newDevice.deviceId),
    `hs1 asked directly still says ${devices(direct.deviceIds.length)}: the proxy fixed alice's view without touching the homeserver`,
  );

  heading("9. hs2's own log: it accepted our signed request");
  const seen = (await federationDeviceRequests(hs2.logPath, s.bob.userId, offset)).filter(
    (r) => r.userAgent === "matrix-resync-proxy",
  );
  for (const r of seen)
    detail(`origin {${r.origin}} → ${r.status} GET /_matrix/federation/v1/user/devices/… "${r.userAgent}"`);
  check(
    seen.some((r) => r.origin === hs1.serverName && r.status === 200),
    `hs2 verified the X-Matrix signature as ${hs1.serverName}'s and answered 200`,
  );
  return hs2;
}

const AUDIT_MS = 5_000;

/** Chapter two: the same bug, and nobody calls the endpoint (docs/operations.md "Self-healing"). */
async function selfHealing(hs2Before: Homeserver): Promise<void> {
  const { hs1 } = servers!;
  heading("10. no client calls that endpoint: the proxy heals stale lists on its own");
  say("hs2 sends again; a second proxy in front of hs1 runs the audit every 5 s (default: 6 hours).");
  const hs2Sending = await restartHomeserver(
    hs2Before,
    { ...(await homeserverOverrides(hs2Before)), send_federation: true },
    { log: detail },
  );
  auditProxy = await startHs1Proxy(hs1, servers!.caPath, { extra: ["--audit-interval-ms", String(AUDIT_MS)] });
  const s = await meetAliceAndBob(hs1, hs2Sending, say, "2");
  const viaProxy: Session = { ...s.alice, clientUrl: auditProxy.url };
  say(
    `alice2's client queries bob2's keys through the proxy: it now tracks bob2, and the proxy notes what hs1 served.`,
  );
  detail(`bob2 has ${describeView(await keysView(viaProxy, s.bob.userId))}`);
  const since = (await sync(viaProxy)).next_batch;

  heading("11. bob2 adds a device; hs1 never hears of it; nobody asks for anything");
  const stale = await makeBobStale({ hs1, hs2: hs2Sending, alice: s.alice, bob: s.bob, log: detail });
  say(`bob2 logged in device ${stale.newDevice.deviceId}; hs1 still lists ${devices(stale.hs1DeviceIds.length)}.`);
  const t = Date.now();
  let changed: string[] = [];
  for (let next = since; Date.now() - t < 3 * AUDIT_MS && !changed.includes(s.bob.userId); ) {
    const answer = await sync(viaProxy, next, 2_000);
    changed = answer.device_lists?.changed ?? [];
    next = answer.next_batch;
  }
  check(
    changed.includes(s.bob.userId),
    `${secs(Date.now() - t)} later, alice2's /sync says device_lists.changed = ${JSON.stringify(changed)} (the audit found it)`,
  );
  const healed = auditProxy.logs.find((l) => l.msg === "device list healed");
  if (healed)
    detail(
      `proxy log: device list healed ${JSON.stringify({ userId: healed.userId, changes: healed.changes, trigger: healed.trigger })}`,
    );
  const after = await keysView(viaProxy, s.bob.userId);
  check(after.deviceIds.includes(stale.newDevice.deviceId), `through the proxy, bob2 has ${describeView(after)}`);
  const direct = await keysView(s.alice, s.bob.userId);
  check(
    !direct.deviceIds.includes(stale.newDevice.deviceId),
    `hs1 asked directly still says ${devices(direct.deviceIds.length)}: nobody called the endpoint, and the homeserver was not changed`,
  );
  say("Besides the audit, an Olm to-device message from a key hs1 does not list, and a key, secret or");
  say("verification request from an unknown device, start the same check at once.");
}

let cleaning: Promise<void> | undefined;
/**
 * Stops the proxy and, if this process holds the homeservers' lock, every Synapse the pid
 * files name. After a signal the story is still running and may be half-way through
 * restarting hs2, so the pid files are swept for `sweepMs` to catch a late start.
 */
function cleanUp(sweepMs = 0): Promise<void> {
  cleaning ??= (async () => {
    const t = Date.now();
    await proxy?.close().catch((e: unknown) => console.error(`stopping the proxy: ${String(e)}`));
    await auditProxy?.close().catch((e: unknown) => console.error(`stopping the second proxy: ${String(e)}`));
    if ((await lockOwner(lockPath)) === process.pid) {
      const until = Date.now() + sweepMs;
      for (;;) {
        await stopAllHomeservers().catch((e: unknown) => console.error(`stopping the homeservers: ${String(e)}`));
        if (Date.now() >= until) break;
        await sleep(250);
      }
      await releaseLock(lockPath);
    }
    if (workDir) await rm(workDir, { recursive: true, force: true });
    phases.push(["teardown", Date.now() - t]);
  })();
  return cleaning;
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    interrupted = true;
    console.log(`\n${signal}: stopping everything the demo started…`);
    void cleanUp(3_000).finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  });
}

async function main(): Promise<number> {
  console.log(
    "matrix-resync-proxy demo: a stale remote device list, MSC2638's refresh fixing it, and the proxy healing one on its own",
  );
  try {
    heading("Installing Synapse (first run only)");
    await phase("install", () => installSynapse({ log: detail }));
    heading("Starting hs1 (localhost:8481), hs2 (localhost:8482) and the proxy in front of hs1");
    await phase("start", async () => {
      servers = await startHomeservers({ log: detail });
      workDir = await mkdtemp(join(tmpdir(), "resync-demo-"));
      const logFile = join(workDir, "proxy.log");
      await writeFile(logFile, "");
      proxy = await startHs1Proxy(servers.hs1, servers.caPath, {
        dataDir: join(workDir, "data"),
        onLog: (l) => appendFileSync(logFile, l),
      });
      detail(`proxy listening on ${proxy.url} (upstream ${servers.hs1.clientUrl}, log ${logFile})`);
    });
    const hs2 = await phase("scenario", story);
    await phase("self-healing", () => selfHealing(hs2));
  } catch (e) {
    failures++;
    // After a signal, the steps under way fail because their servers were stopped: not news.
    if (!interrupted) console.error(`\n✗ the demo stopped: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    heading("Stopping the proxy and both homeservers");
    await cleanUp();
  }
  heading(
    failures === 0
      ? "Done: the proxy delivered bob's fresh device list, then healed bob2's with nobody asking; hs1 was never changed."
      : `Done, with ${failures} failed check(s).`,
  );
  say(`timings: ${phases.map(([n, ms]) => `${n} ${secs(ms)}`).join(", ")}; total ${secs(Date.now() - started)}`);
  return failures === 0 ? 0 : 1;
}

process.exit(await main());
