// Reads a /keys/query answer that streamed to the client unchanged, for self-healing, in a
// thread of its own (src/view-worker.ts): the parse of a large answer must not hold the event
// loop (docs/performance.md "Self-healing"). If the thread cannot start (a runtime without
// worker threads, say), the same work runs here, after the answer went out.
import { createHash } from "node:crypto";
import { Worker } from "node:worker_threads";
import { LRUCache } from "lru-cache";
import type { Logger } from "../observe/log.ts";
import { type AnswerSummary, summarize } from "./keys-answer.ts";
import { fromWire, toWire, type WireSummary } from "./view-wire.ts";

export interface ParseRequest {
  id: number;
  /** The answer's bytes, in an ArrayBuffer of their own (transferred, not copied). */
  buf: Uint8Array;
  /** Which users were asked about: a repeat of the last answer for them is skipped. */
  key: string;
  requested: Record<string, string[]>;
  users: string[];
  now: number;
}

export interface ParseResult {
  id: number;
  summary?: WireSummary;
  /** The same bytes as the last answer for these users: nothing new. */
  same?: true;
}

/**
 * The chunks in one buffer of its own: Buffer.concat may return a slice of Node's shared pool,
 * which must never be transferred to another thread.
 */
function joined(chunks: readonly Uint8Array[]): Uint8Array {
  let size = 0;
  for (const c of chunks) size += c.length;
  const buf = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    buf.set(c, at);
    at += c.length;
  }
  return buf;
}

export class ViewParser {
  readonly #url: URL | undefined;
  readonly #log: Logger;
  #worker: Worker | undefined;
  #broken = false;
  #nextId = 1;
  // Requests in the thread, with the original chunks: the bytes sent were transferred, and if the
  // thread dies they are read again here.
  readonly #waiting = new Map<
    number,
    { resolve: (r: ParseResult) => void; req: ParseRequest; chunks: readonly Uint8Array[] }
  >();
  readonly #last = new LRUCache<string, string>({ max: 10_000 }); // the in-thread fallback's digests

  /** `url`: the worker's entrypoint; none, or one that fails, means parsing in this thread. */
  constructor(o: { url?: URL; log: Logger }) {
    this.#url = o.url;
    this.#log = o.log;
  }

  /**
   * The summary of an answer (its chunks, in order); "same" when it repeats the last answer for
   * these users (nothing new, but read just now); undefined when it cannot be read.
   */
  async summarize(
    chunks: readonly Uint8Array[],
    requested: Record<string, string[]>,
    users: string[],
  ): Promise<AnswerSummary | "same" | undefined> {
    const req: ParseRequest = {
      id: this.#nextId++,
      buf: joined(chunks),
      key: users.join("\n"),
      requested,
      users,
      now: Date.now(),
    };
    const worker = this.#thread();
    const r = worker ? await this.#ask(worker, req, chunks) : this.#here(req);
    if (r.same) return "same";
    return r.summary && fromWire(r.summary);
  }

  close(): void {
    // Cleared first: Deno reports the thread's exit during terminate(), which is no failure.
    const w = this.#worker;
    this.#worker = undefined;
    this.#broken = true;
    void w?.terminate();
    for (const w of this.#waiting.values()) w.resolve({ id: 0 });
    this.#waiting.clear();
  }

  #thread(): Worker | undefined {
    if (this.#worker || this.#broken || !this.#url) return this.#worker;
    try {
      const w = new Worker(this.#url);
      w.unref();
      w.on("message", (r: ParseResult) => {
        const w = this.#waiting.get(r.id);
        this.#waiting.delete(r.id);
        w?.resolve(r);
      });
      w.on("error", (e) => this.#fail(w, e));
      w.on("exit", () => this.#fail(w, new Error("the thread exited")));
      this.#worker = w;
    } catch (e) {
      this.#fail(undefined, e);
    }
    return this.#worker;
  }

  #fail(w: Worker | undefined, e: unknown): void {
    if (w && w !== this.#worker) return;
    if (!this.#broken)
      this.#log.warn("the /keys/query reading thread is unavailable; reading in the main thread", {
        error: String((e as Error)?.message ?? e),
      });
    this.#broken = true;
    this.#worker = undefined;
    const waiting = [...this.#waiting.values()];
    this.#waiting.clear();
    for (const w of waiting) w.resolve(this.#here({ ...w.req, buf: joined(w.chunks) }));
  }

  #ask(w: Worker, req: ParseRequest, chunks: readonly Uint8Array[]): Promise<ParseResult> {
    return new Promise((resolve) => {
      this.#waiting.set(req.id, { resolve, req, chunks });
      w.postMessage(req, [req.buf.buffer as ArrayBuffer]);
    });
  }

  #here(req: ParseRequest): ParseResult {
    const digest = createHash("sha1").update(req.buf).digest("base64");
    if (this.#last.get(req.key) === digest) return { id: req.id, same: true };
    this.#last.set(req.key, digest);
    try {
      const answer = JSON.parse(
        Buffer.from(req.buf.buffer, req.buf.byteOffset, req.buf.length).toString("utf8"),
      ) as unknown;
      if (typeof answer !== "object" || answer === null || Array.isArray(answer)) return { id: req.id };
      return {
        id: req.id,
        summary: toWire(summarize(answer as Record<string, unknown>, req.requested, req.users, req.now)),
      };
    } catch {
      return { id: req.id };
    }
  }
}
