// Each metric moves when its event happens: scraped over HTTP from --metrics-listen, with a
// fake homeserver and a fake federation remote over real sockets.
import type { IncomingMessage, ServerResponse } from "node:http";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { startWorld, type World } from "../helpers/world.ts";
import { json, sample, scrape } from "./ops-helpers.ts";

let w: World;
let alice: string;
const user = (name: string) => `@${name}:${w.remote.serverName}`;
const metrics = () => scrape(w.proxy.opsAddress!);
const api = (token: string | undefined, path: string, init: RequestInit = {}) =>
  fetch(w.proxy.url + path, {
    ...init,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), "content-type": "application/json" },
  });

/** The change of each named sample across `action`. */
async function delta(samples: [string, Record<string, string>?][], action: () => Promise<unknown>): Promise<number[]> {
  const before = await metrics();
  await action();
  const after = await metrics();
  return samples.map(([n, l]) => sample(after, n, l) - sample(before, n, l));
}

// The homeserver's long-poll: answers after `timeout`, like Synapse with nothing new.
function serveSync(req: IncomingMessage, res: ServerResponse): void {
  const timeout = Number(new URL(req.url!, "http://x").searchParams.get("timeout") ?? 0);
  const t = setTimeout(() => json(res, 200, { next_batch: "s9", rooms: {} }), timeout);
  res.on("close", () => clearTimeout(t));
}

beforeAll(async () => {
  w = await startWorld([
    "--metrics-listen",
    "127.0.0.1:0",
    "--retry-initial-ms",
    "600000",
    "--retry-max-ms",
    "600000",
    "--rate-target-burst",
    "100",
  ]);
  alice = w.login("alice", "ALICE1");
  w.hs.on("/_matrix/client/v3/sync", serveSync);
  w.hs.on("/_matrix/client/v3/keys/query", (_req, res, body) => {
    const wanted = Object.keys(JSON.parse(body.toString()).device_keys ?? {});
    json(res, 200, { device_keys: Object.fromEntries(wanted.map((u) => [u, {}])), failures: {} });
  });
});
afterAll(() => w.close());

describe("every name", () => {
  test("is prefixed resync_", async () => {
    const names = [...(await metrics()).matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]!);
    expect(names.length).toBeGreaterThan(20);
    expect(names.filter((n) => !n.startsWith("resync_"))).toEqual([]);
  });
});

describe("client requests", () => {
  test("counted by route class and status; upstream latency observed by route class", async () => {
    const d = await delta(
      [
        ["resync_http_requests_total", { route: "versions", status: "200" }],
        ["resync_upstream_response_seconds_count", { route: "versions" }],
        ["resync_http_requests_total", { route: "passthrough", status: "401" }],
        ["resync_upstream_response_seconds_count", { route: "passthrough" }],
        ["resync_http_requests_total", { route: "health", status: "200" }],
      ],
      async () => {
        await (await api(undefined, "/_matrix/client/versions")).json();
        await (await api(undefined, "/_matrix/client/v3/rooms/!r:hs.test/messages")).json();
        await (await api(undefined, "/_matrix/client/v3/joined_rooms")).json();
        await (await api(undefined, "/_resync/healthz")).json();
      },
    );
    expect(d).toEqual([1, 1, 2, 2, 1]);
  });

  test("a request the client abandons is counted as 499", async () => {
    const d = await delta([["resync_http_requests_total", { route: "sync", status: "499" }]], async () => {
      const ctl = new AbortController();
      const p = api(alice, "/_matrix/client/v3/sync?since=s1&timeout=20000", { signal: ctl.signal }).catch(
        () => "aborted",
      );
      await expect.poll(async () => sample(await metrics(), "resync_open_long_polls")).toBe(1);
      ctl.abort();
      expect(await p).toBe("aborted");
      await expect.poll(async () => sample(await metrics(), "resync_open_long_polls")).toBe(0);
    });
    expect(d).toEqual([1]);
  });

  test("whoami cache: the first use of a token misses, later ones hit; a refresh always re-checks", async () => {
    const token = w.login("cachetest");
    const d = await delta(
      [
        ["resync_cache_lookups_total", { cache: "whoami", result: "miss" }],
        ["resync_cache_lookups_total", { cache: "whoami", result: "hit" }],
        ["resync_refreshes_total", { outcome: "local" }],
      ],
      async () => {
        for (let i = 0; i < 3; i++) {
          const res = await api(token, "/_matrix/client/v3/keys/query", {
            method: "POST",
            body: JSON.stringify({ device_keys: { [user("cachebob")]: [] } }),
          });
          expect(res.status).toBe(200);
        }
        expect((await w.refresh("@carol:hs.test", token)).status).toBe(202);
      },
    );
    expect(d).toEqual([2, 2, 1]);
  });

  test("whoami cache: requests that join a lookup in flight cost no call and count as hits", async () => {
    const token = w.login("joiner");
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    w.hs.on("/_matrix/client/v3/account/whoami", async (req, res) => {
      const who = w.hs.tokens.get(req.headers.authorization?.slice(7) ?? "");
      if (who?.[0] === "@joiner:hs.test") await held;
      if (!who) return json(res, 401, { errcode: "M_UNKNOWN_TOKEN", error: "Unknown token" });
      json(res, 200, { user_id: who[0], device_id: who[1] });
    });
    const calls = () =>
      w.hs.seen.filter((r) => r.target.endsWith("/account/whoami") && r.headers.authorization === `Bearer ${token}`)
        .length;
    const d = await delta(
      [
        ["resync_cache_lookups_total", { cache: "whoami", result: "miss" }],
        ["resync_cache_lookups_total", { cache: "whoami", result: "hit" }],
      ],
      async () => {
        const hits = async () =>
          sample(await metrics(), "resync_cache_lookups_total", { cache: "whoami", result: "hit" });
        const before = await hits();
        const all = Array.from({ length: 4 }, () => w.refresh("@carol:hs.test", token));
        await expect.poll(calls).toBe(1);
        await expect.poll(async () => (await hits()) - before).toBe(3); // all three joined the held lookup
        release();
        for (const r of await Promise.all(all)) expect(r.status).toBe(202);
      },
    );
    expect(calls()).toBe(1);
    expect(d).toEqual([1, 3]);
  });
});

describe("refresh and federation", () => {
  test("a successful refresh: refreshes{ok}, federation requests and latency by destination class", async () => {
    w.remote.setUser(makeUser(user("okbob")));
    const d = await delta(
      [
        ["resync_refreshes_total", { outcome: "ok" }],
        ["resync_federation_requests_total", { destination_class: "ip", outcome: "ok" }],
        ["resync_federation_request_seconds_count", { outcome: "ok" }],
      ],
      async () => expect((await w.refresh(user("okbob"), alice)).status).toBe(202),
    );
    expect(d).toEqual([1, 1, 1]);
  });

  test("a user the remote does not know: refreshes{not_found}, federation{not_found}", async () => {
    const d = await delta(
      [
        ["resync_refreshes_total", { outcome: "not_found" }],
        ["resync_federation_requests_total", { destination_class: "ip", outcome: "not_found" }],
      ],
      async () => expect((await w.refresh(user("nobody"), alice)).status).toBe(404),
    );
    expect(d).toEqual([1, 1]);
  });

  test("a device with a bad self-signature is dropped and counted", async () => {
    const u = makeUser(user("tampered"), { devices: 3 });
    (u.devices[1]!.keys!.keys as Record<string, string>)["curve25519:DEV1"] = "not-what-was-signed";
    w.remote.setUser(u);
    const d = await delta([["resync_federation_dropped_parts_total", { part: "device" }]], async () =>
      expect((await w.refresh(user("tampered"), alice)).status).toBe(202),
    );
    expect(d).toEqual([1]);
    expect(Object.keys((await w.proxy.services.store.getSnapshot(user("tampered")))!.devices).sort()).toEqual([
      "DEV0",
      "DEV2",
    ]);
  });
});

describe("delivery", () => {
  test("open long-polls, an early wake, a sync injection, pending deliveries and a /keys/query overlay", async () => {
    const bob = user("deliverbob");
    w.remote.setUser(makeUser(bob, { devices: 2 }));
    const watcher = w.login("watcher", "WATCH1");
    // The watcher's device queries bob's keys through us: it will hear of bob's refreshes.
    expect(
      (
        await api(watcher, "/_matrix/client/v3/keys/query", {
          method: "POST",
          body: JSON.stringify({ device_keys: { [bob]: [] } }),
        })
      ).status,
    ).toBe(200);
    const before = await metrics();
    const poll = api(watcher, "/_matrix/client/v3/sync?since=s1&timeout=20000");
    await expect.poll(async () => sample(await metrics(), "resync_open_long_polls")).toBe(1);

    expect((await w.refresh(bob, alice)).status).toBe(202);
    const woken = await (await poll).json();
    expect(woken.device_lists.changed).toContain(bob);
    const mid = await metrics();
    expect(sample(mid, "resync_open_long_polls")).toBe(0);
    expect(sample(mid, "resync_long_poll_wakes_total") - sample(before, "resync_long_poll_wakes_total")).toBe(1);
    expect(
      sample(mid, "resync_device_list_injections_total", { endpoint: "sync" }) -
        sample(before, "resync_device_list_injections_total", { endpoint: "sync" }),
    ).toBe(1);
    expect(sample(mid, "resync_pending_deliveries")).toBeGreaterThanOrEqual(1);
    expect(sample(mid, "resync_pending_deliveries")).toBe(await w.proxy.services.store.countPending());

    const keys = await (
      await api(watcher, "/_matrix/client/v3/keys/query", {
        method: "POST",
        body: JSON.stringify({ device_keys: { [bob]: [] } }),
      })
    ).json();
    expect(Object.keys(keys.device_keys[bob]).sort()).toEqual(["DEV0", "DEV1"]);
    const after = await metrics();
    expect(sample(after, "resync_keys_query_overlays_total") - sample(mid, "resync_keys_query_overlays_total")).toBe(1);
    expect(
      sample(after, "resync_http_requests_total", { route: "keys_query", status: "200" }) -
        sample(before, "resync_http_requests_total", { route: "keys_query", status: "200" }),
    ).toBe(1);
  });
});

// Last: this puts the remote's destination into backoff for the rest of the file.
describe("retries and backoff", () => {
  test("a remote 5xx: refreshes{remote}, retry queue depth and destinations in backoff rise", async () => {
    const u = user("down");
    w.remote.setBehaviour({ kind: "status", status: 503 }, { userId: u });
    const d = await delta(
      [
        ["resync_refreshes_total", { outcome: "remote" }],
        ["resync_federation_requests_total", { destination_class: "ip", outcome: "remote" }],
        ["resync_retry_queue_depth"],
        ["resync_destinations_in_backoff"],
      ],
      async () => expect((await w.refresh(u, alice)).status).toBe(502),
    );
    expect(d).toEqual([1, 1, 1, 1]);
  });
});
