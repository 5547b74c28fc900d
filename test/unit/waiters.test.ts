// Long-polls waiting per device (delivery/waiters.ts): one or several per device, each woken
// once, the count exact however they come and go.
import { expect, test } from "vitest";
import { Waiters } from "../../src/delivery/waiters.ts";

const waiter = () => {
  const w = { woken: 0, wake: () => void w.woken++ };
  return w;
};

test("one and two polls per device: each woken once, removals keep the count exact", () => {
  const ws = new Waiters();
  const a = waiter(),
    b = waiter(),
    c = waiter();
  ws.add("d1", a);
  ws.add("d1", a); // the same poll twice is one poll
  ws.add("d1", b);
  ws.add("d2", c);
  expect(ws.count).toBe(3);
  expect(ws.wake(["d1"])).toBe(2);
  expect([a.woken, b.woken, c.woken]).toEqual([1, 1, 0]);
  ws.remove("d1", a);
  ws.remove("d1", a); // twice: no effect
  ws.remove("d2", a); // not there: no effect
  expect(ws.count).toBe(2);
  expect(ws.wake(["d1", "d2", "d3"])).toBe(2);
  expect([a.woken, b.woken, c.woken]).toEqual([1, 2, 1]);
  ws.remove("d1", b);
  ws.remove("d2", c);
  expect(ws.count).toBe(0);
  expect(ws.wake(["d1", "d2"])).toBe(0);
});

test("a poll that removes itself, or a sibling, while being woken: every poll present at the wake is woken", () => {
  const ws = new Waiters();
  const b = waiter();
  const a = {
    woken: 0,
    wake: () => {
      a.woken++;
      ws.remove("d", a);
      ws.remove("d", b);
    },
  };
  ws.add("d", a);
  ws.add("d", b);
  expect(ws.wake(["d"])).toBe(2);
  expect([a.woken, b.woken]).toEqual([1, 1]);
  expect(ws.count).toBe(0);
  const lone = {
    woken: 0,
    wake: () => {
      lone.woken++;
      ws.remove("x", lone);
    },
  };
  ws.add("x", lone);
  expect(ws.wake(["x"])).toBe(1);
  expect(ws.count).toBe(0);
});

test("thousands of devices polling once each: ended polls are swept, live ones stay wakeable", () => {
  const ws = new Waiters();
  const live = Array.from({ length: 50 }, waiter);
  live.forEach((w, i) => ws.add(`live${i}`, w));
  for (let i = 0; i < 10_000; i++) {
    const w = waiter();
    ws.add(`gone${i}`, w);
    ws.remove(`gone${i}`, w);
  }
  expect(ws.count).toBe(50);
  expect(ws.wake(live.map((_, i) => `live${i}`))).toBe(50);
  expect(ws.wake(["gone9999", "gone0"])).toBe(0);
  const again = waiter();
  ws.add("gone0", again); // a device whose entry was swept, or kept as ended, polls again
  expect(ws.wake(["gone0"])).toBe(1);
  expect(again.woken).toBe(1);
});
