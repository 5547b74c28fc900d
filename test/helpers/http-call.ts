// One HTTP/1.1 request on its own connection (Connection: close), over a raw socket. A thousand
// of them run at once: fetch() clients cap their connections per host, and a refresh storm
// whose requests queue in the client would not be a storm.
import net from "node:net";

export interface CallAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  json: Record<string, unknown> | undefined;
}

function dechunk(raw: Buffer): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = raw.indexOf("\r\n", at);
    if (eol === -1) break;
    const size = Number.parseInt(raw.subarray(at, eol).toString("latin1"), 16);
    if (!(size > 0)) break;
    out.push(raw.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
  return Buffer.concat(out);
}

export function call(
  port: number,
  method: string,
  target: string,
  o: { token?: string; body?: unknown; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<CallAnswer> {
  const body = o.body === undefined ? "" : JSON.stringify(o.body);
  const head = [
    `${method} ${target} HTTP/1.1`,
    "Host: matrix.test",
    "Connection: close",
    ...(o.token ? [`Authorization: Bearer ${o.token}`] : []),
    ...(o.body === undefined ? [] : ["Content-Type: application/json", `Content-Length: ${Buffer.byteLength(body)}`]),
    ...Object.entries(o.headers ?? {}).map(([k, v]) => `${k}: ${v}`),
    "",
    "",
  ].join("\r\n");
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1", () => sock.write(head + body));
    const timeoutMs = o.timeoutMs ?? 60_000;
    const timer = setTimeout(
      () => sock.destroy(new Error(`${method} ${target} via :${port}: no answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const chunks: Buffer[] = [];
    sock.on("data", (c: Buffer) => chunks.push(c));
    sock.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`${method} ${target} via :${port}: ${e.message}`));
    });
    sock.on("close", () => {
      clearTimeout(timer);
      const all = Buffer.concat(chunks);
      const split = all.indexOf("\r\n\r\n");
      if (split === -1)
        return reject(new Error(`${method} ${target} via :${port}: connection closed without an answer`));
      const [statusLine, ...lines] = all.subarray(0, split).toString("latin1").split("\r\n");
      const headers: Record<string, string> = {};
      for (const l of lines) {
        const i = l.indexOf(":");
        headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      let raw: Buffer = all.subarray(split + 4);
      if (headers["transfer-encoding"]?.includes("chunked")) raw = dechunk(raw);
      const text = raw.toString("utf8");
      let json: Record<string, unknown> | undefined;
      try {
        json = JSON.parse(text) as Record<string, unknown>;
      } catch {
        json = undefined;
      }
      resolve({ status: Number(statusLine?.split(" ")[1]), headers, body: text, json });
    });
  });
}
