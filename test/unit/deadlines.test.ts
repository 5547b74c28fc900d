// The front end's coarse deadline timer (server/front/deadlines.ts): deadlines fire, cancelled
// ones do not, and the "walk only when the earliest is due" shortcut never skips one.
import { describe, expect, test } from "vitest";
import { cancelExpiry, expireIn } from "../../src/engine/bun/deadlines.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const owner = () => {
  const o = { fired: 0, slot: -1, deadlineAt: 0, expire: () => void o.fired++ };
  return o;
};

describe("deadlines", () => {
  test("a far deadline pending does not delay a nearer one added later, and still fires itself", async () => {
    const far = owner(),
      near = owner();
    expireIn(far, 700);
    expireIn(near, 100);
    await sleep(400);
    expect(near.fired).toBe(1);
    expect(far.fired).toBe(0);
    await sleep(600);
    expect(far.fired).toBe(1);
  });

  test("a cancelled deadline never fires, and the ones behind it still do", async () => {
    const gone = owner(),
      later = owner();
    expireIn(gone, 100);
    expireIn(later, 300);
    cancelExpiry(gone);
    await sleep(600);
    expect(gone.fired).toBe(0);
    expect(later.fired).toBe(1);
  });

  test("an owner that throws does not stop the others due in the same tick", async () => {
    const bad = {
        slot: -1,
        deadlineAt: 0,
        expire: () => {
          throw new Error("boom");
        },
      },
      good = owner();
    expireIn(bad, 50);
    expireIn(good, 50);
    await sleep(400);
    expect(good.fired).toBe(1);
  });

  test("thousands of far deadlines: a near one among them fires, each exactly once", async () => {
    const many = Array.from({ length: 5000 }, owner);
    for (const o of many) expireIn(o, 60_000);
    const near = owner();
    expireIn(near, 100);
    await sleep(400);
    expect(near.fired).toBe(1);
    expect(many.every((o) => o.fired === 0)).toBe(true);
    for (const o of many) cancelExpiry(o);
  });
});
