// A raw HTTP/1.1 GET over node:net that timestamps the wire: response headers, the first body
// byte, the end. fetch() cannot tell "headers arrived" from "the body began", and a proxy that
// buffers a body can send its headers early, so only the raw bytes prove streaming.
import net from "node:net";

export interface TimedResponse {
  status: number;
  /** ms from connect to the end of the response headers */
  headersMs: number;
  /** ms from connect to the first byte of JSON in the body (the chunk-size line does not count) */
  firstBodyMs: number;
  totalMs: number;
  /** body bytes received (chunk framing included) */
  bodyBytes: number;
  /** the first 512 bytes of the body, for error messages */
  bodyHead: string;
}

export function timedGet(
  port: number,
  target: string,
  headers: Record<string, string> = {},
  timeoutMs = 60_000,
): Promise<TimedResponse> {
  return timedRequest(port, "GET", target, headers, undefined, timeoutMs);
}

/** One request on its own connection (Connection: close), so a thousand of them run at once. */
export function timedRequest(
  port: number,
  method: string,
  target: string,
  headers: Record<string, string>,
  body?: string,
  timeoutMs = 60_000,
): Promise<TimedResponse> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const all =
      body === undefined
        ? headers
        : { ...headers, "Content-Type": "application/json", "Content-Length": String(Buffer.byteLength(body)) };
    const head = [
      `${method} ${target} HTTP/1.1`,
      "Host: 127.0.0.1",
      "Connection: close",
      ...Object.entries(all).map(([k, v]) => `${k}: ${v}`),
      "",
      "",
    ].join("\r\n");
    const sock = net.connect(port, "127.0.0.1", () => sock.write(head + (body ?? "")));
    let headerBuf = "";
    let headersMs = NaN;
    let firstBodyMs = NaN;
    let status = 0;
    let bodyBytes = 0;
    let bodyHead = "";
    const timer = setTimeout(
      () => sock.destroy(new Error(`no complete answer for ${target} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const sawJson = (b: Buffer) => {
      if (bodyHead.length < 512) bodyHead += b.subarray(0, 512 - bodyHead.length).toString("latin1");
      if (Number.isNaN(firstBodyMs) && (b.includes(0x7b) || b.includes(0x5b)))
        firstBodyMs = performance.now() - started;
    };
    sock.on("data", (chunk: Buffer) => {
      if (Number.isNaN(headersMs)) {
        headerBuf += chunk.toString("latin1");
        const end = headerBuf.indexOf("\r\n\r\n");
        if (end < 0) return;
        headersMs = performance.now() - started;
        status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(headerBuf)?.[1] ?? 0);
        const rest = Buffer.from(headerBuf.slice(end + 4), "latin1");
        bodyBytes += rest.length;
        sawJson(rest);
        headerBuf = "";
        return;
      }
      bodyBytes += chunk.length;
      sawJson(chunk);
    });
    sock.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on("close", () => {
      clearTimeout(timer);
      if (Number.isNaN(headersMs)) return reject(new Error(`${target}: connection closed before the response headers`));
      resolve({ status, headersMs, firstBodyMs, totalMs: performance.now() - started, bodyBytes, bodyHead });
    });
  });
}

/**
 * GET, then stop reading once `afterBytes` have arrived; `whilePaused` runs during the stall,
 * then reading resumes and the whole response is drained. A proxy that honours backpressure
 * holds at most its socket buffers meanwhile; one that buffers reads the rest into memory.
 */
export function stalledGet(
  port: number,
  target: string,
  headers: Record<string, string>,
  afterBytes: number,
  whilePaused: () => Promise<void>,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const head = [
      `GET ${target} HTTP/1.1`,
      "Host: 127.0.0.1",
      "Connection: close",
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
      "",
      "",
    ].join("\r\n");
    const sock = net.connect(port, "127.0.0.1", () => sock.write(head));
    let got = 0;
    let stalled = false;
    sock.on("data", (chunk: Buffer) => {
      got += chunk.length;
      if (stalled || got < afterBytes) return;
      stalled = true;
      sock.pause();
      whilePaused().then(
        () => sock.resume(),
        (e: unknown) => sock.destroy(e as Error),
      );
    });
    sock.on("error", reject);
    sock.on("close", () => resolve(got));
  });
}
