// Each detection signal of docs/architecture.md "Self-healing", shown to fire over real sockets:
// to-device events naming an unknown device, /keys/query answers with half a cross-signing
// identity or a server in failures; and what costs nothing (the cache window, --detect off).
import { describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import {
  forgedKey,
  fresh,
  type HealWorld,
  keysQuery,
  olmEvent,
  remoteUser,
  sync,
  useHealWorld,
} from "../helpers/self-heal-world.ts";

/** A user the homeserver lists with C0 only, while the remote also has GHOST (or not). */
const staleUser = (h: HealWorld, name: string, remoteHasGhost: boolean): string =>
  remoteUser(h, name, ["C0"], remoteHasGhost ? "GHOST" : undefined).id;

const EVENTS: { type: string; signal: string; content: Record<string, unknown> }[] = [
  {
    type: "m.room_key_request",
    signal: "key_request_unknown_device",
    content: { action: "request", requesting_device_id: "GHOST", request_id: "r1" },
  },
  {
    type: "m.secret.request",
    signal: "secret_request_unknown_device",
    content: { action: "request", requesting_device_id: "GHOST", request_id: "r2", name: "m.megolm_backup.v1" },
  },
  {
    type: "m.key.verification.request",
    signal: "verification_unknown_device",
    content: { from_device: "GHOST", methods: ["m.sas.v1"], transaction_id: "t1", timestamp: 1 },
  },
  {
    type: "m.key.verification.ready",
    signal: "verification_unknown_device",
    content: { from_device: "GHOST", methods: ["m.sas.v1"], transaction_id: "t1" },
  },
  {
    type: "m.key.verification.start",
    signal: "verification_unknown_device",
    content: { from_device: "GHOST", method: "m.sas.v1", transaction_id: "t1" },
  },
];

describe("to-device events naming an unknown device", () => {
  const h = useHealWorld(["--audit-interval-ms", "0"]);

  for (const [i, e] of EVENTS.entries()) {
    test(`${e.type} from an unknown device raises ${e.signal}, one background fetch, and a to_device heal`, async () => {
      const { w } = h;
      const carol = staleUser(h, "carol", true);
      const alice = w.login("alice", `ALICE${i}`);
      await keysQuery(w, alice, [carol]);
      await expect.poll(() => w.proxy.services.heal!.views.get(carol)).toBeDefined();
      const suspected = await h.metric("resync_suspicions_total", { signal: e.signal });
      const healed = await h.metric("resync_heals_total", { trigger: "to_device" });

      h.toDevice.set(alice, [{ sender: carol, type: e.type, content: e.content }]);
      await sync(w, alice);
      await expect.poll(() => h.metric("resync_heals_total", { trigger: "to_device" })).toBe(healed + 1);
      expect(await h.metric("resync_suspicions_total", { signal: e.signal })).toBe(suspected + 1);
      expect(w.remote.count({ userId: carol, endpoint: "devices" })).toBe(1);
      expect(w.proxy.services.heal!.healer.recent()[0]).toMatchObject({
        user_id: carol,
        trigger: "to_device",
        changes: "+1 device GHOST",
      });
      expect((await sync(w, alice)).body.device_lists?.changed).toContain(carol);
    });
  }

  test("the same signal when the remote lists no such device either: one fetch, no heal", async () => {
    const { w } = h;
    const carol = staleUser(h, "carol", false);
    const alice = w.login("alice", "ALICEX");
    await keysQuery(w, alice, [carol]);
    await expect.poll(() => w.proxy.services.heal!.views.get(carol)).toBeDefined();
    const suspected = await h.metric("resync_suspicions_total", { signal: "key_request_unknown_device" });
    const healed = await h.metric("resync_heals_total", { trigger: "to_device" });
    h.toDevice.set(alice, [{ sender: carol, type: EVENTS[0]!.type, content: EVENTS[0]!.content }]);
    await sync(w, alice);
    await expect.poll(() => w.remote.count({ userId: carol, endpoint: "devices" })).toBe(1);
    expect(await h.metric("resync_suspicions_total", { signal: "key_request_unknown_device" })).toBe(suspected + 1);
    await expect.poll(() => h.metric("resync_fresh_lists_total", { outcome: "unchanged" })).toBeGreaterThanOrEqual(1);
    expect(await h.metric("resync_heals_total", { trigger: "to_device" })).toBe(healed);
    expect((await sync(w, alice)).body.device_lists?.changed ?? []).not.toContain(carol);
  });
});

describe("/keys/query answers", () => {
  const h = useHealWorld(["--audit-interval-ms", "0"]);

  test("a self-signing key without a master key is a suspicion; a differing list is healed as keys_query", async () => {
    const { w } = h;
    const bob = staleUser(h, "bob", true);
    h.noMaster.add(bob);
    const alice = w.login("alice", "ALICEK1");
    await keysQuery(w, alice, [bob]);
    await expect.poll(() => h.metric("resync_heals_total", { trigger: "keys_query" })).toBe(1);
    expect(await h.metric("resync_suspicions_total", { signal: "cross_signing_incomplete" })).toBe(1);
    expect(w.remote.count({ userId: bob, endpoint: "devices" })).toBe(1);
    expect(w.proxy.services.heal!.healer.recent()[0]).toMatchObject({ user_id: bob, trigger: "keys_query" });
    expect(w.proxy.logs.some((l) => l.includes("self-signing key without master key"))).toBe(true);
  });

  test("a master key without a self-signing key, the list differing: healed as keys_query", async () => {
    const { w } = h;
    const dan = staleUser(h, "dan", true);
    h.noSelfSigning.add(dan);
    const alice = w.login("alice", "ALICEK2");
    const healed = await h.metric("resync_heals_total", { trigger: "keys_query" });
    await keysQuery(w, alice, [dan]);
    await expect.poll(() => h.metric("resync_heals_total", { trigger: "keys_query" })).toBe(healed + 1);
    expect(w.remote.count({ userId: dan, endpoint: "devices" })).toBe(1);
  });

  test("a server in failures: its users are fetched once, not again over repeated queries", async () => {
    const { w } = h;
    // Not served by the homeserver: the remote's server is listed in failures.
    const gone = [fresh(h, "gone"), fresh(h, "gone")];
    for (const u of gone) w.remote.setUser(makeUser(u, { devices: ["G0"] }));
    const alice = w.login("alice", "ALICEK3");
    await keysQuery(w, alice, gone);
    await expect.poll(() => h.metric("resync_suspicions_total", { signal: "keys_query_failure" })).toBe(2);
    await expect.poll(() => gone.map((u) => w.remote.count({ userId: u, endpoint: "devices" }))).toEqual([1, 1]);
    const later = fresh(h, "gone");
    w.remote.setUser(makeUser(later, { devices: ["G0"] }));
    for (let i = 0; i < 5; i++) await keysQuery(w, alice, [...gone, later]);
    await new Promise((res) => setTimeout(res, 300));
    expect(await h.metric("resync_suspicions_total", { signal: "keys_query_failure" })).toBe(2);
    expect(gone.map((u) => w.remote.count({ userId: u, endpoint: "devices" }))).toEqual([1, 1]);
    expect(w.remote.count({ userId: later, endpoint: "devices" })).toBe(0);
  });
});

describe("--detect off", () => {
  const h = useHealWorld(["--detect", "off", "--audit-interval-ms", "0"]);

  test("a /keys/query answer with half an identity and a server in failures raises nothing and fetches nothing", async () => {
    const { w } = h;
    const bob = staleUser(h, "bob", true);
    h.noSelfSigning.add(bob);
    const gone = fresh(h, "gone");
    const alice = w.login("alice", "ALICED");
    await keysQuery(w, alice, [bob, gone]);
    // The answer was read: the view is learned (the heal rule still applies to the endpoint).
    await expect.poll(() => w.proxy.services.heal!.views.get(bob)).toBeDefined();
    await new Promise((res) => setTimeout(res, 300));
    for (const signal of ["cross_signing_incomplete", "keys_query_failure"])
      expect(await h.metric("resync_suspicions_total", { signal })).toBe(0);
    expect(w.remote.count()).toBe(0);
  });
});

describe("within the cache window", () => {
  const h = useHealWorld([
    "--audit-interval-ms",
    "0",
    "--refresh-cache-ms",
    "60000",
    "--rate-target-burst",
    "100",
    "--rate-target-per-minute",
    "100",
  ]);

  test("repeated suspicions about one user after a fetch cost no more fetches", async () => {
    const { w } = h;
    const eve = staleUser(h, "eve", false);
    const alice = w.login("alice", "ALICEC");
    await keysQuery(w, alice, [eve]);
    await expect.poll(() => w.proxy.services.heal!.views.get(eve)).toBeDefined();
    h.toDevice.set(alice, [olmEvent(eve, forgedKey(1))]);
    await sync(w, alice);
    await expect.poll(() => w.remote.count({ userId: eve, endpoint: "devices" })).toBe(1);
    await expect.poll(() => h.metric("resync_fresh_lists_total", { outcome: "unchanged" })).toBe(1);
    for (let i = 2; i < 8; i++) {
      h.toDevice.set(alice, [olmEvent(eve, forgedKey(i))]);
      await sync(w, alice);
      h.toDevice.set(alice, [{ sender: eve, type: EVENTS[0]!.type, content: EVENTS[0]!.content }]);
      await sync(w, alice);
    }
    await expect.poll(() => h.metric("resync_suspicions_total", { signal: "key_request_unknown_device" })).toBe(6);
    expect(await h.metric("resync_suspicions_total", { signal: "olm_unknown_sender_key" })).toBe(7);
    await new Promise((res) => setTimeout(res, 300));
    // The per-target limit (100 a minute) would have allowed them: the cache is what saved them.
    expect(w.remote.count({ userId: eve, endpoint: "devices" })).toBe(1);
  });
});
