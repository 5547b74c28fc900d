// Chunked framing's limits (src/engine/bun/framing.ts): they bound one line, never a body.
import { describe, expect, test } from "vitest";
import { ChunkedBody } from "../../src/engine/bun/framing.ts";
import { MAX_HEAD_BYTES } from "../../src/engine/bun/head.ts";

const feedAll = (text: string) => {
  const body = new ChunkedBody(400);
  const buf = Buffer.from(text, "latin1");
  return { end: body.feed(buf, 0, buf.length), done: body.done, length: buf.length };
};

describe("ChunkedBody", () => {
  test("chunk extensions adding up past the head limit over many chunks are fine", () => {
    const ext = `;note=${"x".repeat(60)}`;
    const chunks = Math.ceil((2 * MAX_HEAD_BYTES) / ext.length);
    const text = `${`1${ext}\r\na\r\n`.repeat(chunks)}0\r\n\r\n`;
    const r = feedAll(text);
    expect(r).toEqual({ end: r.length, done: true, length: r.length });
  });

  test("one extension line longer than the head limit is refused", () => {
    expect(() => feedAll(`1;${"x".repeat(MAX_HEAD_BYTES + 1)}\r\na\r\n0\r\n\r\n`)).toThrow(/chunk extension too long/);
  });

  test("a trailer section longer than the head limit is refused", () => {
    expect(() => feedAll(`0\r\nX-T: ${"x".repeat(MAX_HEAD_BYTES + 1)}\r\n\r\n`)).toThrow(/trailer section too large/);
  });
});
