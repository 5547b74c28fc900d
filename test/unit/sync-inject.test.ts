import { describe, expect, it } from "vitest";
import {
  injectChanged,
  keysChangesInject,
  reportedChanged,
  wakeResponse,
} from "../../src/delivery/json/sync-inject.ts";
import { bigSyncBody } from "../helpers/bodies.ts";

type Json = Record<string, any>;
const A = "@alice:remote.test";
const B = "@bob:remote.test";
const C = "@carol:other.test";
const clone = <T>(x: T): T => structuredClone(x);

describe("injectChanged (/sync)", () => {
  it("creates device_lists.changed when the homeserver sent none", () => {
    const body: Json = { next_batch: "s2", rooms: {} };
    expect(injectChanged(body, [A], "sync")).toEqual([A]);
    expect(body.device_lists).toEqual({ changed: [A] });
    expect(body.next_batch).toBe("s2");
  });

  it("adds to the homeserver's list without duplicates, and reports users already there", () => {
    const body: Json = { next_batch: "s2", device_lists: { changed: [B, "@x:example.org"] } };
    expect(injectChanged(body, [A, B, A], "sync")).toEqual([A, B]);
    expect(body.device_lists.changed).toEqual([B, "@x:example.org", A]);
  });

  it("skips users the homeserver lists in left", () => {
    const body: Json = { device_lists: { changed: [], left: [B] } };
    expect(injectChanged(body, [A, B], "sync")).toEqual([A]);
    expect(body.device_lists).toEqual({ changed: [A], left: [B] });
  });

  it("leaves the body untouched when there is nothing to add", () => {
    const body: Json = { next_batch: "s2", device_lists: { left: [B] } };
    const before = clone(body);
    expect(injectChanged(body, [B], "sync")).toEqual([]);
    expect(injectChanged(body, [], "sync")).toEqual([]);
    expect(body).toEqual(before);
    const bare: Json = { next_batch: "s3" };
    expect(injectChanged(bare, [], "sync")).toEqual([]);
    expect(bare).toEqual({ next_batch: "s3" });
  });

  it("replaces a malformed device_lists / changed", () => {
    const a: Json = { device_lists: "nonsense" };
    injectChanged(a, [A], "sync");
    expect(a.device_lists).toEqual({ changed: [A] });
    const b: Json = { device_lists: { changed: { [B]: true } } };
    injectChanged(b, [A], "sync");
    expect(b.device_lists.changed).toEqual([A]);
  });

  it("does not write the sliding location", () => {
    const body: Json = { next_batch: "s2" };
    injectChanged(body, [A], "sync");
    expect(body.extensions).toBeUndefined();
  });
});

describe("injectChanged (simplified sliding sync, MSC4186 + MSC3884)", () => {
  it("creates extensions.e2ee.device_lists.changed as needed", () => {
    const body: Json = { pos: "5", rooms: {} };
    expect(injectChanged(body, [A], "sliding")).toEqual([A]);
    expect(body.extensions).toEqual({ e2ee: { device_lists: { changed: [A] } } });
    expect(body.device_lists).toBeUndefined();
  });

  it("keeps the other e2ee fields and extensions, de-duplicates, honours left", () => {
    const body: Json = {
      pos: "5",
      extensions: {
        to_device: { next_batch: "t1", events: [] },
        e2ee: { device_one_time_keys_count: { signed_curve25519: 50 }, device_lists: { changed: [B], left: [C] } },
      },
    };
    expect(injectChanged(body, [A, B, C], "sliding")).toEqual([A, B]);
    expect(body.extensions).toEqual({
      to_device: { next_batch: "t1", events: [] },
      e2ee: { device_one_time_keys_count: { signed_curve25519: 50 }, device_lists: { changed: [B, A], left: [C] } },
    });
  });

  it("ignores a top-level device_lists (that is the /sync location)", () => {
    const body: Json = { pos: "5", device_lists: { left: [A] } };
    expect(injectChanged(body, [A], "sliding")).toEqual([A]);
    expect(body.device_lists).toEqual({ left: [A] });
  });
});

describe("reportedChanged", () => {
  it("reads the homeserver's own changed list for each flavour", () => {
    expect(reportedChanged({ device_lists: { changed: [A, 3, B] } }, "sync")).toEqual([A, B]);
    expect(reportedChanged({ extensions: { e2ee: { device_lists: { changed: [C] } } } }, "sliding")).toEqual([C]);
    expect(reportedChanged({ device_lists: { changed: [A] } }, "sliding")).toEqual([]);
    expect(reportedChanged({ extensions: { e2ee: { device_lists: { changed: [A] } } } }, "sync")).toEqual([]);
    expect(reportedChanged({}, "sync")).toEqual([]);
    expect(reportedChanged({ extensions: { e2ee: {} } }, "sliding")).toEqual([]);
  });

  it("does not create anything", () => {
    const body: Json = { pos: "1" };
    reportedChanged(body, "sliding");
    reportedChanged(body, "sync");
    expect(body).toEqual({ pos: "1" });
  });
});

describe("keysChangesInject (GET /keys/changes)", () => {
  it("adds to changed, de-duplicates and skips left", () => {
    const body: Json = { changed: [A], left: [B] };
    expect(keysChangesInject(body, [A, B, C, C])).toEqual([A, C]);
    expect(body).toEqual({ changed: [A, C], left: [B] });
  });

  it("creates changed when missing, and leaves the body alone when nothing applies", () => {
    const body: Json = {};
    expect(keysChangesInject(body, [A])).toEqual([A]);
    expect(body).toEqual({ changed: [A] });
    const only: Json = { left: [A] };
    expect(keysChangesInject(only, [A])).toEqual([]);
    expect(only).toEqual({ left: [A] });
  });
});

describe("wakeResponse", () => {
  it("answers a /sync long-poll with the same token and only the injection", () => {
    expect(wakeResponse("s72_9", [A, B, A], "sync")).toEqual({
      next_batch: "s72_9",
      device_lists: { changed: [A, B], left: [] },
    });
  });

  it("answers a sliding sync long-poll with the same pos", () => {
    expect(wakeResponse("17", [A], "sliding")).toEqual({
      pos: "17",
      lists: {},
      rooms: {},
      extensions: { e2ee: { device_lists: { changed: [A], left: [] } } },
    });
  });

  it("is read back by reportedChanged and re-injection is a no-op", () => {
    for (const f of ["sync", "sliding"] as const) {
      const w = wakeResponse("1", [A], f);
      expect(reportedChanged(w, f)).toEqual([A]);
      const before = JSON.stringify(w);
      expect(injectChanged(w, [A], f)).toEqual([A]);
      expect(JSON.stringify(w)).toBe(before);
    }
  });
});

describe("injection into a realistic 5 MB /sync", () => {
  it("changes device_lists only, keeping every other byte of the body", () => {
    const body = bigSyncBody(5_000_000, { changed: [B], left: [C] });
    const text = JSON.stringify(body);
    expect(Buffer.byteLength(text)).toBeGreaterThanOrEqual(5_000_000);
    expect(Buffer.byteLength(text)).toBeLessThan(5_200_000);
    expect(Object.keys(body.rooms as Json).length).toBe(1);
    expect(Object.keys((body.rooms as Json).join).length).toBeGreaterThan(100);

    const parsed = JSON.parse(text) as Json;
    expect(reportedChanged(parsed, "sync")).toEqual([B]);
    expect(injectChanged(parsed, [A, B, C], "sync")).toEqual([A, B]);
    const expected = JSON.parse(text) as Json;
    expected.device_lists = { changed: [B, A], left: [C] };
    expect(JSON.stringify(parsed)).toBe(JSON.stringify(expected));
  });

  it("injects into a 1 MB body without device_lists, keeping key order of everything else", () => {
    const body = bigSyncBody(1_000_000);
    expect(body.device_lists).toBeUndefined();
    const text = JSON.stringify(body);
    const parsed = JSON.parse(text) as Json;
    injectChanged(parsed, [A], "sync");
    const out = JSON.stringify(parsed);
    expect(out.startsWith(text.slice(0, -1))).toBe(true);
    expect(out.slice(text.length - 1)).toBe(`,"device_lists":{"changed":["${A}"]}}`);
  });
});
