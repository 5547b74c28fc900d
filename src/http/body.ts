import type { IncomingMessage } from "node:http";
import { MatrixError } from "../matrix/errors.ts";

/** How long a body we read may take: in all, and at least how fast on average. */
export interface BodyLimits {
  totalMs: number;
  /** 0: no minimum. */
  minBytesPerSecond: number;
}

// The rate is checked on this tick, and first after one tick: a client gets a second's grace.
const RATE_TICK_MS = 1000;

/**
 * Buffer a body we must parse (small JSON only: routes we rewrite), refusing oversized ones.
 * With `limits`, a client that sends slower than that is answered 408 (RFC 9110 §15.5.9) and
 * loses its connection: what it sent so far would otherwise be held for as long as it likes.
 */
export function readBody(stream: IncomingMessage, maxBytes: number, limits?: BodyLimits): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const started = performance.now();
    let timer: ReturnType<typeof setInterval> | undefined;
    const stop = () => {
      clearInterval(timer);
      stream.off("data", onData);
      stream.off("end", onEnd);
      stream.off("error", onError);
      stream.off("aborted", onAborted);
      stream.off("close", onAborted);
    };
    const fail = (e: Error) => {
      stop();
      chunks.length = 0;
      reject(e);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        // Stop reading and answer: `connection: close` drops the rest with the connection.
        stream.pause();
        return fail(
          new MatrixError("M_TOO_LARGE", `Body larger than ${maxBytes} bytes`, { headers: { connection: "close" } }),
        );
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      stop();
      resolve(Buffer.concat(chunks));
    };
    const onError = (e: Error) => fail(e);
    // Closed before its end: the peer went away mid-body.
    const onAborted = () => fail(new Error("the body ended early: the connection closed"));
    if (limits) {
      timer = setInterval(
        () => {
          const elapsed = performance.now() - started;
          const slow = limits.minBytesPerSecond > 0 && size < (limits.minBytesPerSecond * elapsed) / 1000;
          if (elapsed < limits.totalMs && !slow) return;
          // Stop reading (the socket fills and the client stalls) and answer; `connection: close`
          // ends the connection after the answer, unread bytes and all.
          stream.pause();
          fail(
            new MatrixError(
              "M_UNKNOWN",
              slow
                ? `Request body slower than ${limits.minBytesPerSecond} bytes/s`
                : `Request body not received within ${limits.totalMs} ms`,
              { status: 408, headers: { connection: "close" } },
            ),
          );
        },
        Math.min(RATE_TICK_MS, limits.totalMs),
      );
    }
    stream.on("data", onData);
    stream.on("end", onEnd);
    stream.on("error", onError);
    stream.on("aborted", onAborted);
    stream.on("close", onAborted);
  });
}

/** Parse a JSON object, or undefined when the bytes are not one. */
export function parseJsonObject(buf: Buffer): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(buf.toString("utf8"));
    return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
