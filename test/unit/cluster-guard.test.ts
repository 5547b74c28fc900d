// The cluster's guard (src/cluster/pg-guard.ts): a failing cluster call reaches the request path
// as StoreUnavailable (a refresh answers 503), and the operator is told why in the log, once per
// second at most, as the store's guard does.
import { expect, test } from "vitest";
import { clusterGuard } from "../../src/cluster/pg-guard.ts";
import { createLogger } from "../../src/observe/log.ts";
import { StoreUnavailable } from "../../src/store/store-guard.ts";

test("a failing cluster call is StoreUnavailable, logged with its operation once per second", async () => {
  const lines: string[] = [];
  const guard = clusterGuard(
    [],
    200,
    createLogger("info", (l) => void lines.push(l)),
  );
  const refused = () => Promise.reject(Object.assign(new Error("permission denied"), { code: "42501" }));
  await expect(guard("rate limit", refused)).rejects.toThrow(StoreUnavailable);
  await expect(guard("rate limit", refused)).rejects.toThrow(/cluster rate limit.*permission denied/);
  const failures = lines.filter((l) => l.includes("cluster failure"));
  expect(failures).toHaveLength(1);
  expect(JSON.parse(failures[0]!)).toMatchObject({ operation: "rate limit", error: "permission denied" });
  // A call with no answer within the deadline fails too, and says so.
  await new Promise((r) => setTimeout(r, 1000));
  await expect(guard("fetch lease", () => new Promise(() => {}))).rejects.toThrow(/no answer within 200 ms/);
  expect(lines.filter((l) => l.includes("cluster failure"))).toHaveLength(2);
  expect(lines.at(-1)).toContain("fetch lease");
});
