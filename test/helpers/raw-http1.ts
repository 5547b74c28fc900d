// HTTP/1.1 at the byte level for front-end tests: a client that reads responses one by one off
// a kept-alive socket (pipelining, interim responses, chunked framing as sent), and an upstream
// that sees each request's raw bytes and answers with whatever bytes a test writes.
import net from "node:net";

export interface RawMessage {
  status: number;
  /** The head as received, blank line included. */
  head: string;
  headers: Record<string, string>;
  /** The body bytes as they came off the wire (chunked framing included). */
  raw: Buffer;
  /** The payload: `raw` de-chunked when the message was chunked. */
  body: Buffer;
}

const CRLF2 = Buffer.from("\r\n\r\n");

function parseHead(text: string): { first: string; headers: Record<string, string> } {
  const [first, ...lines] = text.split("\r\n").filter((l) => l !== "");
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(":");
    const k = l.slice(0, i).toLowerCase();
    headers[k] = headers[k] === undefined ? l.slice(i + 1).trim() : `${headers[k]}, ${l.slice(i + 1).trim()}`;
  }
  return { first: first ?? "", headers };
}

/** Length of a complete chunked body at the start of `buf` and its payload, or undefined. */
function chunked(buf: Buffer): { length: number; payload: Buffer } | undefined {
  let at = 0;
  const parts: Buffer[] = [];
  for (;;) {
    const eol = buf.indexOf("\r\n", at);
    if (eol === -1) return undefined;
    const size = parseInt(buf.toString("latin1", at, eol).split(";")[0]!, 16);
    if (size === 0) {
      const end = buf.indexOf(CRLF2, eol);
      return end === -1 ? undefined : { length: end + 4, payload: Buffer.concat(parts) };
    }
    if (buf.length < eol + 2 + size + 2) return undefined;
    parts.push(buf.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}

/** One message at the start of `buf`: its length, or undefined while incomplete. */
function message(
  buf: Buffer,
  o: { request: boolean; noBody?: boolean; closed?: boolean },
): [RawMessage, number] | undefined {
  const end = buf.indexOf(CRLF2);
  if (end === -1) return undefined;
  const head = buf.toString("latin1", 0, end + 4);
  const { first, headers } = parseHead(head);
  const status = o.request ? 0 : Number(first.split(" ")[1]);
  const rest = buf.subarray(end + 4);
  const done = (rawLen: number, body: Buffer): [RawMessage, number] => [
    { status, head, headers, raw: rest.subarray(0, rawLen), body },
    end + 4 + rawLen,
  ];
  if (o.noBody || (status >= 100 && status < 200) || status === 204 || status === 304) return done(0, Buffer.alloc(0));
  if (/chunked/i.test(headers["transfer-encoding"] ?? "")) {
    const c = chunked(rest);
    return c && done(c.length, c.payload);
  }
  if (headers["content-length"] !== undefined) {
    const n = Number(headers["content-length"]);
    return rest.length >= n ? done(n, rest.subarray(0, n)) : undefined;
  }
  if (o.request) return done(0, Buffer.alloc(0));
  return o.closed ? done(rest.length, rest) : undefined;
}

export class RawClient {
  readonly socket: net.Socket;
  #buf = Buffer.alloc(0);
  #closed = false;
  #wake: (() => void) | undefined;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (c: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, c]);
      this.#wake?.();
    });
    socket.on("close", () => {
      this.#closed = true;
      this.#wake?.();
    });
    socket.on("error", () => {});
  }

  static connect(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, "127.0.0.1", () => resolve(new RawClient(s)));
      s.once("error", reject);
    });
  }

  write(data: string | Buffer): void {
    this.socket.write(typeof data === "string" ? Buffer.from(data, "latin1") : data);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The next response (interim ones too); `noBody` for the answer to a HEAD. */
  async read(o: { noBody?: boolean; timeoutMs?: number } = {}): Promise<RawMessage> {
    const deadline = Date.now() + (o.timeoutMs ?? 5000);
    for (;;) {
      const m = message(this.#buf, { request: false, noBody: o.noBody, closed: this.#closed });
      if (m) {
        this.#buf = this.#buf.subarray(m[1]);
        return m[0];
      }
      if (this.#closed)
        throw new Error(`connection closed; unparsed: ${JSON.stringify(this.#buf.toString("latin1").slice(0, 200))}`);
      if (Date.now() > deadline) throw new Error("no complete response in time");
      await new Promise<void>((r) => {
        this.#wake = r;
        setTimeout(r, 50);
      });
    }
  }

  /** Resolves once the bytes received so far (of any message) contain `text`. */
  async waitFor(text: string, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#buf.includes(text)) {
      if (Date.now() > deadline) throw new Error(`${JSON.stringify(text)} not received in time`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Resolves once the proxy has closed the connection. */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#closed) {
      if (Date.now() > deadline) throw new Error("connection still open");
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

export interface RawRequest extends RawMessage {
  /** Which connection (0, 1, …) and which request on it (0, 1, …). */
  conn: number;
  index: number;
}

export type RawHandler = (req: RawRequest, socket: net.Socket) => void;

export interface RawUpstream {
  port: number;
  url: string;
  requests: RawRequest[];
  connections: number;
  close(): Promise<void>;
}

/** An upstream that hands each request's raw bytes to `handler`, which answers on the socket. */
export async function startRawUpstream(handler: RawHandler): Promise<RawUpstream> {
  const requests: RawRequest[] = [];
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer((s) => {
    const conn = connections++;
    let index = 0;
    let buf = Buffer.alloc(0);
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => {});
    s.on("data", (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      for (let m = message(buf, { request: true }); m; m = message(buf, { request: true })) {
        buf = buf.subarray(m[1]);
        const req: RawRequest = { ...m[0], conn, index: index++ };
        requests.push(req);
        handler(req, s);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    get connections() {
      return connections;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
