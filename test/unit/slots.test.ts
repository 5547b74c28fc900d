// SlotSet (src/slots.ts): a set whose members remember their slot, for sets that change with
// every request. Membership, size and walks stay right through deletes, re-adds and the
// compactions that churn triggers.
import { describe, expect, test } from "vitest";
import { SlotSet } from "../../src/engine/bun/slots.ts";

const item = (id: number) => ({ id, slot: -1 });
const ids = (s: SlotSet<{ id: number; slot: number }>) => {
  const out: number[] = [];
  s.forEach((x) => out.push(x.id));
  return out.sort((a, b) => a - b);
};

describe("SlotSet", () => {
  test("add, delete, has and size, with adding twice and deleting a non-member", () => {
    const s = new SlotSet<ReturnType<typeof item>>();
    const a = item(1),
      b = item(2);
    s.add(a);
    s.add(a);
    s.add(b);
    expect(s.size).toBe(2);
    expect(s.delete(a)).toBe(true);
    expect(s.delete(a)).toBe(false);
    expect(s.has(a)).toBe(false);
    expect(s.has(b)).toBe(true);
    expect(a.slot).toBe(-1);
    expect(ids(s)).toEqual([2]);
  });

  test("heavy churn around long-lived members: they stay, every compaction included", () => {
    const s = new SlotSet<ReturnType<typeof item>>();
    const kept = Array.from({ length: 10 }, (_, i) => item(-1 - i));
    kept.forEach((k) => s.add(k));
    for (let i = 0; i < 20_000; i++) {
      const x = item(i);
      s.add(x);
      if (i % 7 !== 0) s.delete(x); // every seventh stays
    }
    expect(s.size).toBe(10 + Math.ceil(20_000 / 7));
    expect(ids(s).filter((id) => id < 0)).toEqual(kept.map((k) => k.id).sort((a, b) => a - b));
    for (const k of kept) expect(s.has(k)).toBe(true);
  });

  test("a walk may delete members and add new ones: deleted ones are not visited, new ones neither", () => {
    const s = new SlotSet<ReturnType<typeof item>>();
    const xs = Array.from({ length: 200 }, (_, i) => item(i));
    xs.forEach((x) => s.add(x));
    for (let i = 0; i < 150; i++) s.delete(xs[i]!); // enough dead slots for a compaction
    const seen: number[] = [];
    s.forEach((x) => {
      seen.push(x.id);
      if (x.id === 150) s.delete(xs[151]!);
      s.add(item(10_000 + x.id)); // would compact, but not mid-walk
    });
    expect(seen).toEqual(
      xs
        .slice(150)
        .map((x) => x.id)
        .filter((id) => id !== 151),
    );
    expect(s.size).toBe(49 + 49); // 50 left, one deleted mid-walk, one added per visit
  });
});
