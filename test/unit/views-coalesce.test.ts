// Changed views are written in one transaction per interval, off the request path
// (docs/architecture.md "Self-healing": a view lost to a crash within the interval is learned
// again from the next answer), and a clean close writes what is still waiting.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { HsView } from "../../src/matrix/device.ts";
import { Views } from "../../src/delivery/views.ts";
import { createLogger } from "../../src/observe/log.ts";
import type { ClientPaths } from "../../src/http/client-paths.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import type { Store } from "../../src/store/store.ts";

let dir: string;
beforeEach(() => void (dir = mkdtempSync(join(tmpdir(), "views-coalesce-"))));
afterEach(async () => {
  vi.useRealTimers();
  rmSync(dir, { recursive: true, force: true });
});

const view = (userId: string, key: string, seenAt = 1): HsView => ({
  userId,
  devices: { A: { "curve25519:A": key } },
  seenAt,
});

/** The store, counting the write transactions that reach it. */
function counted(s: Store): { store: Store; writes: HsView[][] } {
  const writes: HsView[][] = [];
  const store = new Proxy(s, {
    get(t, k) {
      if (k === "putView") return (v: HsView) => (writes.push([v]), t.putView(v));
      if (k === "putViews") return (vs: HsView[]) => (writes.push([...vs]), t.putViews(vs));
      const f = Reflect.get(t, k) as unknown;
      return typeof f === "function" ? (f as (...a: unknown[]) => unknown).bind(t) : f;
    },
  });
  return { store, writes };
}

describe("view writes", () => {
  it("are coalesced: many changes within an interval cost one write of the latest views", async () => {
    vi.useFakeTimers();
    const raw = await openSqliteStore(dir);
    const { store, writes } = counted(raw);
    const views = new Views({
      store,
      paths: undefined as unknown as ClientPaths,
      log: createLogger("error"),
      flushMs: 1000,
    });
    views.record([view("@b:r.test", "k1"), view("@c:r.test", "k1")]);
    views.record([view("@b:r.test", "k2")]);
    views.record([view("@b:r.test", "k3")]);
    expect(writes).toEqual([]); // nothing on the request path
    expect((await views.get("@b:r.test"))?.devices.A?.["curve25519:A"]).toBe("k3"); // read back before the write
    expect(views.count).toBe(2);
    await vi.advanceTimersByTimeAsync(1000);
    expect(writes.length).toBe(1);
    expect(writes[0]!.map((v) => `${v.userId} ${v.devices.A!["curve25519:A"]}`).sort()).toEqual([
      "@b:r.test k3",
      "@c:r.test k1",
    ]);
    expect((await raw.getView("@b:r.test"))?.devices.A?.["curve25519:A"]).toBe("k3");
    views.record([view("@b:r.test", "k3")]); // unchanged: nothing to write
    await vi.advanceTimersByTimeAsync(5000);
    expect(writes.length).toBe(1);
    await views.close();
    await raw.close();
  });

  it("still waiting at a clean close are written, and survive the restart", async () => {
    const { store, writes } = counted(await openSqliteStore(dir));
    const views = new Views({
      store,
      paths: undefined as unknown as ClientPaths,
      log: createLogger("error"),
      flushMs: 60_000,
    });
    views.record([view("@b:r.test", "k9")]);
    await Promise.resolve(); // the read that finds it new
    expect(writes).toEqual([]);
    await views.close();
    await store.close();
    expect(writes.length).toBe(1);
    const again = await openSqliteStore(dir);
    const reopened = new Views({
      store: again,
      paths: undefined as unknown as ClientPaths,
      log: createLogger("error"),
    });
    await Promise.resolve(); // the count is read at construction
    expect(reopened.count).toBe(1);
    expect((await reopened.get("@b:r.test"))?.devices.A?.["curve25519:A"]).toBe("k9");
    await reopened.close();
    await again.close();
  });
});
