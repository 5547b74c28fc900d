// The `trigger` label of resync_heals_total takes only the values docs/operations.md lists
// (endpoint, to_device, keys_query, audit, admin): a retried fetch counts under the trigger that
// started it (kept with the durable retry), and the re-verification of an overlay grown older
// than --snapshot-max-age-ms counts as background re-verification, "audit".
import { describe, expect, test } from "vitest";
import { scrape } from "./ops-helpers.ts";
import { keysQuery, remoteUser, useHealWorld, withDevice } from "../helpers/self-heal-world.ts";

const TRIGGERS = ["endpoint", "to_device", "keys_query", "audit", "admin"];

describe("heal triggers", () => {
  const h = useHealWorld([
    "--audit-interval-ms",
    "0",
    "--refresh-wait-ms",
    "1000",
    "--retry-initial-ms",
    "500",
    "--retry-max-ms",
    "1000",
    "--probe-interval-ms",
    "0",
    "--snapshot-max-age-ms",
    "1500",
  ]);

  test("a refresh that failed and was retried counts under the trigger that started it", async () => {
    const { w } = h;
    const bob = remoteUser(h, "bob", ["DEV0"], "NEWDEV").id;
    const alice = w.login("alice", "ALICET1");
    await keysQuery(w, alice, [bob]);
    await expect.poll(() => w.proxy.services.heal!.views.get(bob)).toBeDefined();
    w.remote.setBehaviour({ kind: "status", status: 502 }, { userId: bob });
    expect((await w.refresh(bob, alice)).status).toBeGreaterThanOrEqual(500);
    expect((await w.proxy.services.store.getRetry(bob))?.trigger).toBe("endpoint");
    w.remote.clearBehaviours();
    await expect.poll(() => h.metric("resync_heals_total", { trigger: "endpoint" }), { timeout: 8000 }).toBe(1);
    expect(w.remote.count({ userId: bob, endpoint: "devices" })).toBe(2);
    expect(await h.metric("resync_heals_total", { trigger: "retry" })).toBe(0);
    expect(w.proxy.services.heal!.healer.recent()[0]).toMatchObject({ user_id: bob, trigger: "endpoint" });
  });

  test("an overlay re-verified because it grew old counts as audit", async () => {
    const { w } = h;
    const { id: carol, hs: before } = remoteUser(h, "carol", ["X"], "Y");
    const alice = w.login("alice", "ALICET2");
    await keysQuery(w, alice, [carol]);
    await expect.poll(() => w.proxy.services.heal!.views.get(carol)).toBeDefined();
    const endpoint = await h.metric("resync_heals_total", { trigger: "endpoint" });
    expect((await w.refresh(carol, alice)).status).toBe(202);
    await expect.poll(() => h.metric("resync_heals_total", { trigger: "endpoint" })).toBe(endpoint + 1);
    // carol adds another device (and Y is keyed anew); her overlay grows older than --snapshot-max-age-ms.
    w.remote.setUser(withDevice(withDevice(before, "Y"), "Z"));
    await new Promise((r) => setTimeout(r, 1700));
    await keysQuery(w, alice, [carol]);
    await expect.poll(() => h.metric("resync_heals_total", { trigger: "audit" })).toBe(1);
    expect(await h.metric("resync_heals_total", { trigger: "recheck" })).toBe(0);
    expect(w.proxy.services.heal!.healer.recent()[0]).toMatchObject({ user_id: carol, trigger: "audit" });
  });

  test("the metric shows no trigger beyond the five", async () => {
    const text = await scrape(h.w.proxy.opsAddress!);
    const seen = [...text.matchAll(/^resync_heals_total\{trigger="([^"]*)"\}/gm)].map((m) => m[1]);
    expect(seen.length).toBeGreaterThan(0);
    for (const t of seen) expect(TRIGGERS).toContain(t);
  });
});
