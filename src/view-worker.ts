// Entry of the thread that reads large /keys/query answers for self-healing
// (src/delivery/view-parser.ts): a 1000-device answer is a JSON.parse of most of a megabyte,
// which would otherwise hold the event loop that every client shares. It lives beside main.ts
// because the compiled binary embeds it as an entrypoint of its own, found by that name.
import { createHash } from "node:crypto";
import { parentPort } from "node:worker_threads";
import { LRUCache } from "lru-cache";
import { summarize } from "./delivery/keys-answer.ts";
import type { ParseRequest, ParseResult } from "./delivery/view-parser.ts";
import { toWire } from "./delivery/view-wire.ts";

const port = parentPort!;
// The last answer's digest per set of users queried: clients repeat the same query, and the
// same bytes teach nothing new.
const last = new LRUCache<string, string>({ max: 10_000 });
const decoder = new TextDecoder();

port.on("message", (m: ParseRequest) => {
  let out: ParseResult;
  try {
    const digest = createHash("sha1").update(m.buf).digest("base64");
    if (last.get(m.key) === digest) out = { id: m.id, same: true };
    else {
      last.set(m.key, digest);
      const answer = JSON.parse(decoder.decode(m.buf)) as unknown;
      out =
        typeof answer === "object" && answer !== null && !Array.isArray(answer)
          ? { id: m.id, summary: toWire(summarize(answer as Record<string, unknown>, m.requested, m.users, m.now)) }
          : { id: m.id };
    }
  } catch {
    out = { id: m.id }; // not JSON: nothing to learn
  }
  port.postMessage(out);
});
