// Durability of a delivery, as properties over real sockets: whatever the order of refreshes,
// lost answers (the client never read them, and asks again from where it was) and answers of a
// quiet account (the homeserver's token does not move), for /sync and simplified sliding sync:
// - no refresh is lost: once the client reads answers again, one names the refreshed user;
// - no busy loop: once it has, the next long-poll reaches the homeserver with its own timeout.
import fc from "fast-check";
import type { IncomingMessage, ServerResponse } from "node:http";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { startWorld, type World } from "../helpers/world.ts";

const SLIDING = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
type Flavour = "sync" | "sliding";

let w: World;
let bob: string;
let asker: string;
/** The homeserver's next answer keeps the client's token (a quiet account) when set. */
let quietNow = false;
let tokens = 0;

function answer(req: IncomingMessage, res: ServerResponse, flavour: Flavour): void {
  const q = new URL(req.url!, "http://x").searchParams;
  const from = q.get(flavour === "sync" ? "since" : "pos");
  const next = quietNow && from ? from : `t${++tokens}`;
  // Answered at once, whatever the timeout: what the proxy asked for is in w.hs.seen.
  res.writeHead(200, { "content-type": "application/json" });
  res.end(
    JSON.stringify(
      flavour === "sync" ? { next_batch: next, rooms: {} } : { pos: next, lists: {}, rooms: {}, extensions: {} },
    ),
  );
}

const api = (token: string, path: string, init: RequestInit = {}) =>
  fetch(w.proxy.url + path, {
    ...init,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
  });
const BODY = JSON.stringify({
  conn_id: "encryption",
  extensions: { to_device: { enabled: true }, e2ee: { enabled: true } },
});

/** One poll; returns the position to resume from and whether the answer named bob. */
async function poll(
  flavour: Flavour,
  token: string,
  from: string | undefined,
  timeout: number,
): Promise<{ next: string; named: boolean }> {
  if (flavour === "sync") {
    const b = await (
      await api(token, `/_matrix/client/v3/sync?timeout=${timeout}${from ? `&since=${encodeURIComponent(from)}` : ""}`)
    ).json();
    return { next: b.next_batch, named: (b.device_lists?.changed ?? []).includes(bob) };
  }
  const b = await (
    await api(token, `${SLIDING}?${from ? `pos=${encodeURIComponent(from)}&` : ""}timeout=${timeout}`, {
      method: "POST",
      body: BODY,
    })
  ).json();
  return { next: b.pos, named: (b.extensions?.e2ee?.device_lists?.changed ?? []).includes(bob) };
}

beforeAll(async () => {
  w = await startWorld([
    "--refresh-cache-ms",
    "0",
    "--rate-target-burst",
    "100000",
    "--rate-target-per-minute",
    "100000",
    "--rate-user-burst",
    "100000",
    "--rate-user-per-minute",
    "100000",
  ]);
  bob = `@bob:${w.remote.serverName}`;
  w.remote.setUser(makeUser(bob, { devices: ["DEV0"] }));
  w.hs.on(
    "/_matrix/client/v3/keys/query",
    (_req, res) => void res.end(JSON.stringify({ device_keys: {}, failures: {} })),
  );
  w.hs.on("/_matrix/client/v3/sync", (req, res) => answer(req, res, "sync"));
  w.hs.on(SLIDING, (req, res) => answer(req, res, "sliding"));
  asker = w.login("asker", "ASKER");
});
afterAll(() => w.close());

const step = fc.record({
  refresh: fc.boolean(),
  lost: fc.boolean(),
  quiet: fc.boolean(),
  timeout: fc.constantFrom(0, 30_000),
});
let run = 0;
let generation = 0;

describe.each<Flavour>(["sync", "sliding"])(
  "%s: refreshes, lost answers and quiet accounts in any order",
  (flavour) => {
    test("no refresh is lost, and no long-poll is driven into a loop", async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 8 }), fc.boolean(), async (steps, quietEnd) => {
          const token = w.login(`d${++run}`, `D${run}`);
          await api(token, "/_matrix/client/v3/keys/query", {
            method: "POST",
            body: JSON.stringify({ device_keys: { [bob]: [] } }),
          });
          quietNow = false;
          let from = (await poll(flavour, token, undefined, 0)).next; // the initial request
          let unseen = false; // a refresh no answer the client read has named yet
          for (const s of steps) {
            if (s.refresh) {
              // A real change each time: only those reach clients (resync/heal.ts).
              w.remote.setUser(makeUser(bob, { devices: [`DEV${++generation}`] }));
              expect((await w.refresh(bob, asker)).status).toBe(202);
              unseen = true;
            }
            quietNow = s.quiet;
            const got = await poll(flavour, token, from, s.timeout);
            if (s.lost) continue; // never read: the client asks again from where it was
            from = got.next;
            if (got.named) unseen = false;
          }
          // The client reads answers again: the refresh reaches it at once (it may take a second
          // read when the first was the answer to an already-carried one).
          quietNow = quietEnd;
          for (let i = 0; i < 2 && unseen; i++) {
            const got = await poll(flavour, token, from, 30_000);
            from = got.next;
            if (got.named) unseen = false;
          }
          expect(unseen).toBe(false);
          // Then it is acknowledged, and the long-poll goes to the homeserver with its own timeout.
          const before = w.hs.seen.length;
          const last = await poll(flavour, token, from, 30_000);
          expect(last.named).toBe(false);
          const asked = w.hs.seen.slice(before).map((r) => r.target);
          expect(asked).toHaveLength(1);
          expect(asked[0]).toContain("timeout=30000");
          expect(asked[0]).not.toContain(".mrp_");
        }),
        { numRuns: 25 },
      );
    }, 120_000);
  },
);
