// Reading streamed /keys/query answers in a thread of their own (src/delivery/view-parser.ts):
// the same summary as reading them here, a repeated answer skipped, and a thread that cannot
// start leaves the reading to this one, its pending answers included.
import { afterEach, describe, expect, test } from "vitest";
import { summarize } from "../../src/delivery/keys-answer.ts";
import { ViewParser } from "../../src/delivery/view-parser.ts";
import { createLogger } from "../../src/observe/log.ts";
import { keysQueryAnswer } from "../helpers/bodies.ts";

const bob = "@bob:remote.test";
const answer = keysQueryAnswer([bob], 50);
delete (answer.self_signing_keys as Record<string, unknown>)[bob];
(answer.failures as Record<string, unknown>)["down.test"] = { status: 503 };
const bytes = Buffer.from(JSON.stringify(answer));
const chunks = [bytes.subarray(0, 1000), bytes.subarray(1000, 5000), bytes.subarray(5000)];
const expected = summarize(answer, { [bob]: [] }, [bob], 0);
const strip = <T extends { views: { seenAt: number }[] }>(s: T | "same" | undefined) =>
  typeof s === "object" ? { ...s, views: s.views.map((v) => ({ ...v, seenAt: 0 })) } : s;
let parser: ViewParser | undefined;
afterEach(() => parser?.close());

describe("the /keys/query reading thread", () => {
  test("gives what reading here gives, and skips a repeat of the last answer", async () => {
    parser = new ViewParser({ url: new URL("../../src/view-worker.ts", import.meta.url), log: createLogger("error") });
    const got = await parser.summarize(chunks, { [bob]: [] }, [bob]);
    expect(strip(got)).toEqual(strip(expected));
    if (typeof got !== "object") throw new Error(`expected a summary, got ${got}`);
    expect(got.halfCrossSigning).toEqual([{ userId: bob, hasMaster: true }]);
    expect(got.failedServers).toEqual(["down.test"]);
    expect(got.answered).toEqual([bob]); // listed in device_keys, failures or not
    // A repeat is "same": nothing to learn, but the caller knows the answer was read just now.
    expect(await parser.summarize(chunks, { [bob]: [] }, [bob])).toBe("same");
    // The caller's chunks are untouched (only a copy was transferred).
    expect(Buffer.concat(chunks).equals(bytes)).toBe(true);
  });

  test("a thread that cannot start: read here, nothing lost, one warning", async () => {
    const lines: string[] = [];
    parser = new ViewParser({
      url: new URL("../../src/no-such-worker.ts", import.meta.url),
      log: createLogger("warn", (l) => void lines.push(l)),
    });
    const [a, b] = await Promise.all([
      parser.summarize(chunks, { [bob]: [] }, [bob]),
      parser.summarize([Buffer.from("not json")], {}, ["@x:y.test"]),
    ]);
    expect(strip(a)).toEqual(strip(expected));
    expect(b).toBeUndefined();
    expect(strip(await parser.summarize([bytes], { [bob]: [] }, ["@c:remote.test", bob]))).toBeDefined();
    expect(lines.filter((l) => l.includes("reading thread is unavailable"))).toHaveLength(1);
  });
});
