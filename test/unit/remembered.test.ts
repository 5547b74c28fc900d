// The Bun front end's memo of intercept() answers (src/engine/bun/start.ts remembered): one
// answer per method and path, never one method's for another, and bounded, since paths come
// from clients.
import { describe, expect, test } from "vitest";
import { remembered } from "../../src/engine/bun/start.ts";

describe("remembered", () => {
  test("asks once per method and path, and keeps methods apart", () => {
    const asked: string[] = [];
    const f = remembered((method, path) => {
      asked.push(`${method} ${path}`);
      return method === "GET" && path === "/a";
    }, 100);
    expect([f("GET", "/a"), f("GET", "/a"), f("PUT", "/a"), f("GET", "/b"), f("PUT", "/a")]).toEqual([
      true,
      true,
      false,
      false,
      false,
    ]);
    expect(asked).toEqual(["GET /a", "PUT /a", "GET /b"]);
  });

  test("starts over once it holds `max` answers, across methods", () => {
    let asks = 0;
    const f = remembered(() => ++asks, 3);
    f("GET", "/1");
    f("PUT", "/2");
    f("GET", "/3");
    expect(f("GET", "/1")).toBe(1); // still held: 3 answers
    f("POST", "/4"); // the fourth: the memo is cleared first
    expect(f("GET", "/1")).toBe(5); // asked again
    expect(f("POST", "/4")).toBe(4);
  });

  test("the answer that starts it over is kept", () => {
    let asks = 0;
    const f = remembered(() => ++asks, 3);
    for (const p of ["/1", "/2", "/3", "/4"]) f("GET", p);
    expect(f("GET", "/4")).toBe(4);
    expect(asks).toBe(4);
  });

  test("long paths are never kept", () => {
    let asks = 0;
    const f = remembered(() => ++asks, 10);
    const long = `/${"x".repeat(300)}`;
    f("GET", long);
    f("GET", long);
    expect(asks).toBe(2);
  });
});
