import { describe, expect, test } from "vitest";
import {
  isWrapped,
  markOf,
  newMark,
  unwrapTarget,
  unwrapToken,
  upstreamTarget,
  withMark,
  wrapToken,
} from "../../src/delivery/tokens.ts";

describe("positions of ours", () => {
  test("wrap adds a fresh suffix to the homeserver's token; unwrap gives that token back", () => {
    const a = wrapToken("s72594_4483_1934");
    const b = wrapToken(a); // re-wrapping replaces our suffix, never stacks two
    expect(a).toMatch(/^s72594_4483_1934\.mrp_[0-9a-z]{12}$/);
    expect(b).not.toBe(a);
    expect(unwrapToken(a)).toBe("s72594_4483_1934");
    expect(unwrapToken(b)).toBe("s72594_4483_1934");
    expect(unwrapToken("s1.mrp_short")).toBe("s1.mrp_short");
    expect(isWrapped(a)).toBe(true);
    expect(isWrapped("s1")).toBe(false);
  });

  test("a suffix chosen before the homeserver's token is known: the position ends with it, and markOf reads it back", () => {
    const mark = newMark();
    expect(mark).toMatch(/^\.mrp_[0-9a-z]{12}$/);
    const pos = withMark("s5_1", mark);
    expect(pos).toBe(`s5_1${mark}`);
    expect(withMark(pos, mark)).toBe(pos); // never two suffixes
    expect(markOf(pos)).toBe(mark);
    expect(markOf("s5_1")).toBeUndefined();
    expect(markOf("s1.mrp_short")).toBeUndefined();
  });

  test("the suffix comes off every position parameter, and nothing else changes", () => {
    const pos = wrapToken("1/s10_1");
    const raw = encodeURIComponent(pos);
    expect(raw.endsWith(pos.slice(-17))).toBe(true); // unreserved: never percent-encoded
    expect(unwrapTarget(`/_matrix/client/v3/sync?since=${raw}&timeout=30000&filter=%7B%7D`)).toBe(
      "/_matrix/client/v3/sync?since=1%2Fs10_1&timeout=30000&filter=%7B%7D",
    );
    expect(unwrapTarget(`/x?from=${raw}&to=${raw}&dir=b`)).toBe("/x?from=1%2Fs10_1&to=1%2Fs10_1&dir=b");
    expect(unwrapTarget(`/x?%70os=${raw}`)).toBe("/x?%70os=1%2Fs10_1"); // an encoded name counts
    // Other parameters keep even a value that looks like ours; targets without ours are left alone.
    expect(unwrapTarget(`/x?search_term=${raw}`)).toBeUndefined();
    expect(unwrapTarget("/x?since=s1")).toBeUndefined();
    expect(unwrapTarget(`/x/${raw}`)).toBeUndefined();
    expect(upstreamTarget("/x?since=s1")).toBe("/x?since=s1");
  });
});
