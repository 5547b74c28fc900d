// One failing user or destination never stalls the others.
import { afterAll, beforeAll, expect, test } from "vitest";
import { makeUser } from "../helpers/fake-devices.ts";
import { startFakeRemote, type FakeRemote } from "../helpers/fake-remote.ts";
import { OUR_KEY_ID, OUR_PUBLIC_KEY, startWorld, type World } from "../helpers/world.ts";

let w: World;
let healthy: FakeRemote;

beforeAll(async () => {
  w = await startWorld([
    "--refresh-wait-ms",
    "1000",
    "--retry-initial-ms",
    "300",
    "--retry-max-ms",
    "600",
    "--rate-user-burst",
    "1000",
    "--rate-target-burst",
    "1000",
  ]);
  healthy = await startFakeRemote({
    ca: w.ca,
    host: "127.0.0.2",
    trustedKeys: { "hs.test": { [OUR_KEY_ID]: OUR_PUBLIC_KEY } },
  });
});
afterAll(async () => {
  await healthy.close();
  await w.close();
});

test("a hanging destination and a hanging user do not hold up refreshes elsewhere, nor their retries", {
  timeout: 30_000,
}, async () => {
  const asker = w.login("asker");
  // Destination 1 hangs for every request: its 3 connection slots fill up with held requests.
  const held = w.remote.hold();
  const stuck = Array.from({ length: 5 }, (_, i) => `@stuck${i}:${w.remote.serverName}`);
  for (const u of stuck) w.remote.setUser(makeUser(u));
  const stuckAnswers = await Promise.all(stuck.map((u) => w.refresh(u, asker)));
  expect(stuckAnswers.map((r) => r.status)).toEqual([202, 202, 202, 202, 202]); // answered at the wait deadline
  expect(w.remote.maxInFlight).toBeLessThanOrEqual(3);

  // Destination 2 works: refreshes there succeed at once, and a failing user's retries run.
  const fine = `@fine:${healthy.serverName}`;
  const flaky = `@flaky:${healthy.serverName}`;
  healthy.setUser(makeUser(fine));
  healthy.setUser(makeUser(flaky));
  healthy.setBehaviour({ kind: "status", status: 500 }, { userId: flaky });
  expect((await w.refresh(fine, asker)).status).toBe(202);
  expect((await w.refresh(flaky, asker)).status).toBe(502);
  await healthy.waitFor(() => healthy.count({ userId: flaky }) >= 2, 10_000); // retried while destination 1 still hangs
  healthy.clearBehaviours();
  await expect.poll(async () => await w.proxy.services.store.getSnapshot(flaky), { timeout: 10_000 }).toBeDefined();
  held.release();
});
