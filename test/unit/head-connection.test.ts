// The Connection options the Bun front end reads from a head's bytes (src/engine/bun/head.ts
// connectionOptions) decide keep-alive both ways and which fields are stripped as hop-by-hop
// (RFC 9110 §7.6.1, RFC 9112 §9.3). They must say what the string reading says: the value joined,
// split on commas, trimmed, lower-cased (hasToken, and the names rewrite-head.ts strips).
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import {
  CONN_CLOSE,
  CONN_KEEP_ALIVE,
  CONN_NAMES,
  CONN_UNSURE,
  clientKeepsAlive,
  connectionOptions,
  fieldValue,
  hasToken,
  headEnd,
  parseRequestHead,
  parseResponseHead,
} from "../../src/engine/bun/head.ts";
import { NAME } from "../../src/engine/bun/names.ts";

const request = (values: string[], minor = 1) => {
  const buf = Buffer.from(
    `GET / HTTP/1.${minor}\r\nHost: hs.test\r\n${values.map((v) => `Connection: ${v}\r\n`).join("")}\r\n`,
    "latin1",
  );
  return parseRequestHead(buf, 0, headEnd(buf, 0));
};

/** What the string path makes of the joined value. */
function byStrings(joined: string | undefined) {
  const parts = (joined ?? "").split(",").map((p) => p.trim().toLowerCase());
  return {
    close: hasToken(joined, "close"),
    keepAlive: hasToken(joined, "keep-alive"),
    names: parts.some((n) => n !== "" && n !== "close" && n !== "keep-alive" && n !== "content-length"),
  };
}

describe("Connection options read from bytes", () => {
  test.each([
    [[], 0],
    [["close"], CONN_CLOSE],
    [["Keep-Alive"], CONN_KEEP_ALIVE],
    [[" \tCLOSE\t , keep-alive "], CONN_CLOSE | CONN_KEEP_ALIVE],
    [["", ","], 0],
    [["content-length"], 0],
    [["Content-Length, x-private"], CONN_NAMES],
    [["closed"], CONN_NAMES],
    [["keep-alive", "upgrade"], CONN_KEEP_ALIVE | CONN_NAMES],
    [["close\xa0"], CONN_UNSURE],
    [["x-caf\xe9"], CONN_UNSURE],
  ] as [string[], number][])("%j → %i", (values, bits) => {
    expect(connectionOptions(request(values))).toBe(bits);
  });

  test("a response head is read the same way", () => {
    const buf = Buffer.from("HTTP/1.0 200 OK\r\nConnection: Keep-Alive, X-Up\r\nContent-Length: 0\r\n\r\n", "latin1");
    expect(connectionOptions(parseResponseHead(buf, 0, headEnd(buf, 0)))).toBe(CONN_KEEP_ALIVE | CONN_NAMES);
  });

  test("agree with the string reading for any ASCII value", () => {
    const piece = fc.constantFrom(
      "close",
      "CLOSE",
      "Keep-Alive",
      "keep-alive",
      "content-length",
      "Content-Length",
      "upgrade",
      "x-a",
      ",",
      " ",
      "\t",
      "",
      "clos",
      "keep",
      "-alive",
    );
    const value = fc.array(piece, { maxLength: 8 }).map((ps) => ps.join(""));
    fc.assert(
      fc.property(fc.array(value, { maxLength: 3 }), fc.integer({ min: 0, max: 1 }), (values, minor) => {
        const h = request(values, minor);
        const bits = connectionOptions(h);
        const want = byStrings(fieldValue(h, NAME.CONNECTION));
        expect({
          close: (bits & CONN_CLOSE) !== 0,
          keepAlive: (bits & CONN_KEEP_ALIVE) !== 0,
          names: (bits & CONN_NAMES) !== 0,
        }).toEqual(want);
        expect(bits & CONN_UNSURE).toBe(0);
        // RFC 9112 §9.3: close wins; else HTTP/1.1 persists, HTTP/1.0 only with keep-alive.
        expect(clientKeepsAlive(h)).toBe(!want.close && (minor === 1 || want.keepAlive));
      }),
      { numRuns: 2000 },
    );
  });

  test("a value beyond ASCII is left to the string reading, which trims U+00A0", () => {
    const h = request(["close\xa0"], 1);
    expect(connectionOptions(h)).toBe(CONN_UNSURE);
    expect(clientKeepsAlive(h)).toBe(false);
  });
});
