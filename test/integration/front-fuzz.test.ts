// The Bun front end (src/engine/bun/) fuzzed over loopback sockets: generated requests, alone
// and pipelined, cut into random writes; then mutated at the byte level. A strict reference
// parser (RFC 9112, plus the front end's documented leniencies) reads the client's bytes and
// the homeserver's: whatever reaches the homeserver must be exactly what the reference reads
// from the client, up to where the front end refused. A homeserver that drops some requests
// checks the answers the front end makes in its place. Bun only, like front.test.ts.
import net from "node:net";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startTestProxy } from "../helpers/proxy.ts";
import {
  chunkExt,
  CR,
  cutting,
  type Cutting,
  fieldName as fieldNameFrom,
  fieldText,
  hex,
  isHex,
  latin1,
  LF,
  ows,
  owsTrim,
  pieces,
  randomCase,
  rawServer,
  readChunked,
  sleep,
} from "../helpers/fuzz-http.ts";

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
// FZ_RUNS=n runs each property n times (a longer hunt); FZ_SEED and FZ_PATH replay a failure
// with the seed and path fast-check printed.
const RUNS = (n: number) => Number(process.env.FZ_RUNS ?? n);
const REPLAY = process.env.FZ_SEED ? { seed: Number(process.env.FZ_SEED), path: process.env.FZ_PATH } : {};
type Proxy = Awaited<ReturnType<typeof startTestProxy>>;

/** The methods of the requests answers are due for: those read, and the one refused. */
const methodsOf = (ref: RefParse) => [...ref.reqs.map((r) => r.method), ...(ref.stopMethod ? [ref.stopMethod] : [])];

// ---------------------------------------------------------------------------------------------
// The reference: a strict HTTP/1.1 request parser, written apart from head.ts and framing.ts.
// RFC 9112 with only the leniencies the front end documents: empty lines before a request
// (§2.2), any visible or obs-text byte in the target (as node), chunk extensions as any bytes
// but CR, LF and NUL after `;`, SP or HTAB (§7.1.1: ignored), trailer lines as any bytes but CR
// and LF (passed on verbatim), identical repeated Content-Length values (RFC 9110 §8.6). Its own
// limits: 15 Content-Length digits, 12 chunk-size digits. A head without its blank line is
// incomplete whatever else it holds (the front end reads a head only once it has all of it),
// unless it holds a blank line of bare LFs, which the front end refuses at once.
// ---------------------------------------------------------------------------------------------

interface RefRequest {
  method: string;
  target: string;
  minor: number;
  /** The body as framed on the wire (chunked framing included: it is relayed verbatim). */
  body: string;
  keepAlive: boolean;
  /** Lower-case names of its fields. */
  names: string[];
  /** Where the request's bytes end. */
  end: number;
}

type RefEnd = "complete" | "incomplete" | "invalid" | "closed";

interface RefParse {
  reqs: RefRequest[];
  /** complete: every byte read; closed: the last request ends the connection. */
  end: RefEnd;
  why?: string;
  /** The method of the request it stopped in, when its head was read. */
  stopMethod?: string;
}

const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e\x80-\xff]+) HTTP\/1\.([01])$/;
const FIELD_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):([\s\S]*)$/;
const CTL = /[\x00-\x08\x0a-\x1f\x7f]/;

function reference(b: Buffer): RefParse {
  const reqs: RefRequest[] = [];
  let p = 0;
  let stopMethod: string | undefined;
  const stop = (end: RefEnd, why?: string): RefParse => ({ reqs, end, why, stopMethod });
  for (;;) {
    while (b[p] === CR && b[p + 1] === LF) p += 2;
    if (p >= b.length) return stop("complete");
    const blank = b.indexOf("\r\n\r\n", p, "latin1");
    if (blank === -1) {
      // No head end yet, but a blank line made of bare LFs: refused at once (client.ts).
      if (b.indexOf("\n\n", p, "latin1") !== -1) return stop("invalid", "bare LF head");
      return stop("incomplete", "unterminated head");
    }
    const [line, ...fieldLines] = b.toString("latin1", p, blank).split("\r\n");
    const rl = REQUEST_LINE.exec(line!);
    if (!rl) return stop("invalid", `request line ${JSON.stringify(line)}`);
    const fields: [string, string][] = [];
    for (const fl of fieldLines) {
      const m = FIELD_LINE.exec(fl);
      if (!m) return stop("invalid", `field line ${JSON.stringify(fl)}`);
      const value = owsTrim(m[2]!);
      if (CTL.test(value)) return stop("invalid", `control in ${JSON.stringify(fl)}`);
      fields.push([m[1]!.toLowerCase(), value]);
    }
    // A head that parses has a method, and a refusal of a HEAD then comes without a body.
    stopMethod = rl[1];
    const values = (name: string) => fields.filter(([n]) => n === name).map(([, v]) => v);
    const minor = Number(rl[3]);
    const hosts = values("host").length;
    if (hosts > 1 || (hosts === 0 && minor === 1)) return stop("invalid", "Host count");
    const te = values("transfer-encoding");
    const cl = values("content-length");
    const bodyStart = blank + 4;
    let end: number;
    if (te.length > 0) {
      if (cl.length > 0) return stop("invalid", "both Content-Length and Transfer-Encoding");
      if (minor === 0) return stop("invalid", "Transfer-Encoding in HTTP/1.0");
      if (owsTrim(te.join(", ")).toLowerCase() !== "chunked")
        return stop("invalid", `Transfer-Encoding ${JSON.stringify(te)}`);
      const c = readChunked(b, bodyStart);
      const e = typeof c === "object" && "end" in c ? c.end : c;
      if (e === "incomplete") return stop("incomplete", "chunked body");
      if (typeof e !== "number") return stop("invalid", e.invalid);
      end = e;
    } else if (cl.length > 0) {
      const parts = cl.join(",").split(",").map(owsTrim);
      if (!parts.every((x) => x === parts[0]) || !/^\d{1,15}$/.test(parts[0]!))
        return stop("invalid", `Content-Length ${JSON.stringify(cl)}`);
      end = bodyStart + Number(parts[0]);
      if (end > b.length) return stop("incomplete", "body");
    } else end = bodyStart;
    // RFC 9112 §9.3; the tokens as head.ts hasToken reads them (which is not about framing).
    const conn = values("connection")
      .join(",")
      .split(",")
      .map((t) => t.trim().toLowerCase());
    const keepAlive = !conn.includes("close") && (minor === 1 || conn.includes("keep-alive"));
    reqs.push({
      method: rl[1]!,
      target: rl[2]!,
      minor,
      body: b.toString("latin1", bodyStart, end),
      keepAlive,
      names: fields.map(([n]) => n),
      end,
    });
    p = end;
    stopMethod = undefined;
    if (!keepAlive) return stop("closed");
  }
}

// ---------------------------------------------------------------------------------------------
// Generators.
// ---------------------------------------------------------------------------------------------

interface Spec {
  method: string;
  target: string;
  minor: number;
  /** Field lines as sent, CRLF excluded. */
  lines: string[];
  framing: "none" | "length" | "chunked";
  body: string;
}

const pchar = fc.constantFrom(..."abcXYZ019-._~!$&'()*+,;=:@".split(""));
const pct = fc
  .tuple(fc.integer({ min: 0, max: 255 }), fc.boolean())
  .map(([n, up]) => `%${hex(n).padStart(2, "0")[up ? "toUpperCase" : "toLowerCase"]()}`);
const segment = fc.array(fc.oneof({ weight: 4, arbitrary: pchar }, pct), { maxLength: 8 }).map((a) => a.join(""));
const target = fc
  .tuple(
    fc.array(segment, { minLength: 1, maxLength: 3 }),
    fc.option(fc.array(fc.oneof(pchar, pct, fc.constantFrom("/", "?")), { maxLength: 12 })),
  )
  .map(([segs, q]) => `/fz/${segs.join("/")}${q === null ? "" : `?${q.join("")}`}`);

const EXTRA_NAMES = [
  "Accept",
  "User-Agent",
  "Authorization",
  "Cookie",
  "X-Fz",
  "X-Forwarded-For",
  "X-Request-Id",
  "Accept-Encoding",
  "TE",
  "Trailer",
  "Keep-Alive",
  "Upgrade",
  "Proxy-Authorization",
  "X-Resync-Peer",
];
const fieldName = fieldNameFrom(EXTRA_NAMES);
const fieldValueText = fieldText(20);
const extraLine = fc.tuple(fieldName, ows, fieldValueText, ows).map(([n, a, v, b]) => `${n}:${a}${v}${b}`);
// Connection options may name any field, the framing ones too: a client is not to send those
// (RFC 9110 §7.6.1), but a proxy must not be confused by one that does.
const connectionLine = fc
  .array(
    fc.oneof(
      fc.constantFrom("keep-alive", "content-length", "host", "transfer-encoding", "x-fz", "te", "upgrade"),
      fieldName,
    ),
    { minLength: 1, maxLength: 3 },
  )
  .chain((opts) => fc.tuple(randomCase("Connection"), ows, ows).map(([n, a, b]) => `${n}:${a}${opts.join(", ")}${b}`));

const bodyText = fc.oneof(
  { weight: 3, arbitrary: fc.uint8Array({ maxLength: 48 }).map((a) => Buffer.from(a).toString("latin1")) },
  // What a smuggler hides in a body: a request the homeserver must never see as one.
  fc.constantFrom(
    "GET /smuggled HTTP/1.1\r\nHost: hs.test\r\n\r\n",
    "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "\r\n\r\n",
    "5\r\nhello\r\n0\r\n\r\n",
  ),
  fc.integer({ min: 200, max: 3000 }).map((n) => "b".repeat(n)),
);

function chunkedText(body: string) {
  return fc
    .record({
      sizes: fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 6 }),
      exts: fc.array(fc.option(chunkExt, { freq: 3 }), { minLength: 8, maxLength: 8 }),
      zeros: fc.array(fc.nat(3), { minLength: 8, maxLength: 8 }),
      upper: fc.boolean(),
      lastZeros: fc.nat(2),
      trailers: fc.array(fc.tuple(fc.constantFrom("X-T", "x-trailer", "Digest"), fieldValueText), { maxLength: 2 }),
    })
    .map(({ sizes, exts, zeros, upper, lastZeros, trailers }) => {
      let out = "";
      for (let at = 0, k = 0; at < body.length; k++) {
        const n = Math.min(sizes[k % sizes.length]!, body.length - at);
        const size = "0".repeat(zeros[k % 8]!) + (upper ? hex(n).toUpperCase() : hex(n));
        out += `${size}${exts[k % 8] ?? ""}\r\n${body.slice(at, at + n)}\r\n`;
        at += n;
      }
      out += `${"0".repeat(lastZeros + 1)}${exts[7] ?? ""}\r\n`;
      for (const [n, v] of trailers) out += `${n}: ${v}\r\n`;
      return `${out}\r\n`;
    });
}

const requestSpec: fc.Arbitrary<Spec> = fc
  .record({
    method: fc.constantFrom("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"),
    target,
    minor: fc.constantFrom(1, 1, 1, 0),
    host: fc
      .tuple(randomCase("Host"), ows, fc.constantFrom("hs.test", "hs.test:8448", "127.0.0.1"), ows)
      .map(([n, a, v, b]) => `${n}:${a}${v}${b}`),
    extra: fc.array(extraLine, { maxLength: 4 }),
    connection: fc.option(connectionLine, { freq: 3 }),
    body: fc.oneof(fc.constant(""), bodyText),
    chunked: fc.boolean(),
    cl: fc.record({ name: randomCase("Content-Length"), zeros: fc.nat(2), a: ows, b: ows, twice: fc.boolean() }),
    at: fc.nat(),
    noHost: fc.boolean(),
  })
  .chain((r) => {
    const chunked = r.minor === 1 && r.chunked;
    return (chunked ? chunkedText(r.body) : fc.constant(r.body)).map((wire): Spec => {
      const lines = [...r.extra];
      if (r.connection) lines.push(r.connection);
      if (r.minor === 1 || !r.noHost) lines.splice(r.at % (lines.length + 1), 0, r.host);
      let framing: Spec["framing"] = "none";
      if (chunked) {
        framing = "chunked";
        lines.push(`${r.method.length % 2 ? "transfer-encoding" : "Transfer-Encoding"}: chunked`);
      } else if (r.body.length > 0 || r.cl.twice) {
        framing = "length";
        const cl = `${r.cl.name}:${r.cl.a}${"0".repeat(r.cl.zeros)}${r.body.length}${r.cl.b}`;
        lines.splice(r.at % (lines.length + 1), 0, cl);
        if (r.cl.twice) lines.push(cl);
      }
      return { method: r.method, target: r.target, minor: r.minor, lines, framing, body: wire };
    });
  });

const serialise = (s: Spec) =>
  `${s.method} ${s.target} HTTP/1.${s.minor}\r\n${s.lines.map((l) => `${l}\r\n`).join("")}\r\n${s.body}`;

/** Requests for one connection: keep-alive all but maybe the last, so the pipeline is read. */
const pipeline = fc.array(requestSpec, { minLength: 1, maxLength: 4 }).map((specs) =>
  specs.map((s, i) => {
    if (i === specs.length - 1) return s;
    const lines = s.lines.filter((l) => !/^connection:/i.test(l));
    lines.push(s.minor === 0 ? "Connection: keep-alive" : "Connection: Keep-Alive, x-fz");
    return { ...s, lines };
  }),
);

// Mutations: lines that break or confuse framing, and byte edits where parsers decide things.
const NASTY_LINES = [
  "Content-Length: 0",
  "Content-Length: 3",
  "Content-Length: 40",
  "Content-Length: -1",
  "Content-Length: 0x10",
  "Content-Length: +3",
  "Content-Length: 3, 4",
  "Content-Length: 3,3",
  "Content-Length: 3 3",
  "Content-Length: ",
  "Content-Length: 1e2",
  "Content-Length: 0000000000000003",
  "Content-Length: 9999999999999999",
  "Content-Length: 3\xa0",
  "Content-Length:\t3\t",
  "Content-Length: \xa03",
  "content-length: 3",
  "Transfer-Encoding: chunked",
  "Transfer-Encoding: chunked, gzip",
  "Transfer-Encoding: gzip, chunked",
  "Transfer-Encoding:  chunked",
  "Transfer-Encoding: Chunked",
  "Transfer-Encoding: CHUNKED",
  "Transfer-Encoding: chunked\xa0",
  "Transfer-Encoding: \xa0chunked",
  "Transfer-Encoding: xchunked",
  "Transfer-Encoding: chunked;q=1",
  "Transfer-Encoding: identity",
  "Transfer-Encoding: ",
  "Transfer-Encoding: chunked, chunked",
  "Transfer-Encoding : chunked",
  " Transfer-Encoding: chunked",
  "Transfer-Encoding\x00: chunked",
  "Transfer_Encoding: chunked",
  "Transfer-Encoding: \x0bchunked",
  "Transfer-Encoding: ,chunked",
  "Connection: close",
  "Connection: keep-alive",
  "Connection: content-length",
  "Connection: Content-Length, close",
  "Connection: transfer-encoding",
  "Connection: host",
  "Connection: close\xa0",
  "Host: other.test",
  "Host:",
  "X-Fold: a\r\n b",
  "X-Nul: a\x00b",
  "X-Lf: a\nb",
  "X-Cr: a\rb",
  "Expect: 100-continue",
  "Upgrade: h2c",
];
const INSERTS = [
  "\r\n",
  "\n",
  "\r",
  "\x00",
  " ",
  "\t",
  ";",
  "0",
  "f",
  "fffffffffffff",
  "\r\n\r\n",
  "-",
  ",",
  "\xa0",
  "\r\n ",
  ":",
  "\x7f",
  "\xff",
];

type Mutation = {
  op: "flip" | "insert" | "delete" | "lf" | "truncate";
  pos: number;
  pick: number;
  near: boolean;
  n: number;
};
const mutation: fc.Arbitrary<Mutation> = fc.record({
  op: fc.constantFrom("flip", "insert", "insert", "delete", "lf", "truncate"),
  pos: fc.nat(),
  pick: fc.nat(),
  near: fc.boolean(),
  n: fc.integer({ min: 1, max: 4 }),
});

/** Where parsers make decisions: line ends, colons, spaces, separators, digits. */
function decisionPoints(b: Buffer): number[] {
  const out: number[] = [];
  for (let i = 0; i < b.length; i++) if ([CR, LF, 58, 32, 59, 44, 9].includes(b[i]!) || isHex(b[i])) out.push(i);
  return out;
}

function mutate(b: Buffer, ms: Mutation[]): Buffer {
  let s = b.toString("latin1");
  for (const m of ms) {
    const points = decisionPoints(latin1(s));
    const pos = m.near && points.length > 0 ? points[m.pos % points.length]! : m.pos % (s.length + 1);
    if (m.op === "flip" && s.length > 0)
      s = s.slice(0, pos) + INSERTS[m.pick % INSERTS.length]!.slice(-1) + s.slice(pos + 1);
    else if (m.op === "insert") s = s.slice(0, pos) + INSERTS[m.pick % INSERTS.length] + s.slice(pos);
    else if (m.op === "delete") s = s.slice(0, pos) + s.slice(pos + m.n);
    else if (m.op === "lf") {
      const at = s.indexOf("\r\n", pos);
      if (at !== -1) s = s.slice(0, at) + s.slice(at + 1);
    } else if (m.op === "truncate") s = s.slice(0, pos);
  }
  return latin1(s);
}

/** A request with a nasty field line put in among its own. */
const nastySpec = fc
  .tuple(requestSpec, fc.array(fc.tuple(fc.constantFrom(...NASTY_LINES), fc.nat()), { minLength: 1, maxLength: 2 }))
  .map(([s, adds]) => {
    const lines = [...s.lines];
    for (const [l, at] of adds) lines.splice(at % (lines.length + 1), 0, l);
    return { ...s, lines };
  });

// ---------------------------------------------------------------------------------------------
// The homeserver: reads each connection with the reference parser and answers every request
// with a numbered 200. Bytes it cannot read are a failure of the front end.
// ---------------------------------------------------------------------------------------------

interface Seen {
  seq: number;
  /** The proxy's own call (its key check): not relayed (no X-Forwarded-Proto), not ours. */
  own: boolean;
  method: string;
  target: string;
  body: string;
}

interface Upstream {
  url: string;
  seen: Seen[];
  /** Bytes the reference refused, as the front end sent them. */
  garbled: string[];
  close(): Promise<void>;
}

const HEALTH = "/fz-health";
/** Requests here the homeserver drops unanswered: the front end answers 502 in its place. */
const DROP = "/fz-drop/";

async function startUpstream(): Promise<Upstream> {
  const seen: Seen[] = [];
  const garbled: string[] = [];
  let seq = 0;
  const server = await rawServer((s) => {
    let buf = Buffer.alloc(0);
    s.on("data", (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      const r = reference(buf);
      for (const q of r.reqs) {
        const n = seq++;
        const own = !q.names.includes("x-forwarded-proto") && /^\/(_matrix|\.well-known)\//.test(q.target);
        seen.push({ seq: n, own, method: q.method, target: q.target, body: q.body });
        if (q.target.startsWith(DROP)) return void s.destroy();
        const text = `seq ${n}`;
        s.write(
          `HTTP/1.1 200 OK\r\ncontent-length: ${text.length}\r\nx-fz: ${n}\r\n\r\n${q.method === "HEAD" ? "" : text}`,
        );
      }
      if (r.end === "invalid" || r.end === "closed") {
        if (r.end === "invalid") garbled.push(`${r.why}: ${JSON.stringify(buf.toString("latin1"))}`);
        s.destroy();
      }
      buf = buf.subarray(r.reqs.at(-1)?.end ?? 0);
    });
  });
  return {
    url: server.url,
    seen,
    garbled,
    close: server.close,
  };
}

// ---------------------------------------------------------------------------------------------
// The client: writes the pieces, reads responses as they come.
// ---------------------------------------------------------------------------------------------

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

class Client {
  readonly socket: net.Socket;
  readonly answers: Answer[] = [];
  closed = false;
  /** Response bytes that make no sense. */
  garbled: string | undefined;
  lastEvent = Date.now();
  #buf = Buffer.alloc(0);
  /** The methods of the requests sent, in order: the answer to a HEAD has no body. */
  readonly #methods: readonly string[];

  private constructor(socket: net.Socket, methods: readonly string[]) {
    this.socket = socket;
    this.#methods = methods;
    socket.on("data", (c: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, c]);
      this.lastEvent = Date.now();
      this.#parse();
    });
    socket.on("close", () => {
      this.closed = true;
      this.lastEvent = Date.now();
      this.#parse();
      if (this.#buf.length > 0)
        this.garbled ??= `unparsed at close: ${JSON.stringify(this.#buf.toString("latin1").slice(0, 300))}`;
    });
    socket.on("error", () => {});
  }

  static connect(port: number, methods: readonly string[]): Promise<Client> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, "127.0.0.1", () => resolve(new Client(s, methods)));
      s.setNoDelay(true);
      s.once("error", reject);
    });
  }

  #parse(): void {
    for (;;) {
      const blank = this.#buf.indexOf("\r\n\r\n");
      if (blank === -1) return;
      const [line, ...fields] = this.#buf.toString("latin1", 0, blank).split("\r\n");
      const m = /^HTTP\/1\.1 (\d{3}) /.exec(line!);
      if (!m) {
        this.garbled ??= `bad status line ${JSON.stringify(line)}`;
        this.#buf = Buffer.alloc(0);
        return;
      }
      const headers: Record<string, string> = {};
      for (const f of fields) {
        const i = f.indexOf(":");
        const k = f.slice(0, i).toLowerCase();
        headers[k] = headers[k] === undefined ? f.slice(i + 1).trim() : `${headers[k]}, ${f.slice(i + 1).trim()}`;
      }
      const status = Number(m[1]);
      const noBody = this.#methods[this.answers.length] === "HEAD" || status < 200 || status === 204 || status === 304;
      let length: number;
      if (noBody) length = 0;
      else if (headers["transfer-encoding"] !== undefined) {
        this.garbled ??= `unexpected chunked response ${JSON.stringify(line)}`;
        return;
      } else if (headers["content-length"] !== undefined) length = Number(headers["content-length"]);
      else if (this.closed) length = this.#buf.length - blank - 4;
      else return;
      if (this.#buf.length < blank + 4 + length) return;
      this.answers.push({ status, headers, body: this.#buf.toString("latin1", blank + 4, blank + 4 + length) });
      this.#buf = this.#buf.subarray(blank + 4 + length);
    }
  }

  async send(parts: Buffer[]): Promise<void> {
    for (const p of parts) {
      if (this.closed) return;
      // Written, then a timer's turn: the front end reads each piece on its own, mostly.
      await new Promise<void>((r) => this.socket.write(p, () => (parts.length > 1 ? setTimeout(r, 0) : r())));
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// The suite.
// ---------------------------------------------------------------------------------------------

describe.skipIf(!isBun)("the Bun front end, fuzzed", () => {
  let up: Upstream;
  let proxy: Proxy;

  beforeAll(async () => {
    up = await startUpstream();
    proxy = await startTestProxy(up.url, ["--upstream-header-timeout-ms", "3000"], "bun");
  });
  afterAll(async () => {
    await proxy?.close();
    await up?.close();
  });

  // Generous: a run that passes returns long before it, and CI runs other suites alongside.
  const WAIT_MS = 5000;

  /** Wait for the front end to have said all it will about these bytes (bounded). */
  async function settle(c: Client, ref: RefParse): Promise<void> {
    const deadline = Date.now() + WAIT_MS;
    const want = ref.reqs.length;
    while (!c.closed && Date.now() < deadline) {
      const quiet = Date.now() - c.lastEvent;
      const n = c.answers.length;
      // Once every expected answer is in, a short quiet spell shows nothing more is coming;
      // invalid bytes and a closing request must end in the front end closing the connection.
      if (ref.end === "complete" && n >= want && quiet >= 15) return;
      if (ref.end === "incomplete" && n >= want && quiet >= 40) return;
      await sleep(2);
    }
  }

  /** Send `bytes` on a fresh connection; what the client and the homeserver saw. */
  async function exchange(bytes: Buffer, how: Cutting) {
    const ref = reference(bytes);
    const seenFrom = up.seen.length,
      garbledFrom = up.garbled.length;
    const c = await Client.connect(proxy.port, methodsOf(ref));
    await c.send(pieces(bytes, how));
    await settle(c, ref);
    const closed = c.closed;
    c.close();
    // Property 3: the front end is still up and serving.
    const h = await Client.connect(proxy.port, ["GET"]);
    await h.send([latin1(`GET ${HEALTH} HTTP/1.1\r\nHost: hs.test\r\n\r\n`)]);
    for (const deadline = Date.now() + WAIT_MS; h.answers.length === 0 && !h.closed && Date.now() < deadline; )
      await sleep(1);
    h.close();
    expect(h.answers[0]?.status, "a plain GET after the run").toBe(200);
    const seen = up.seen.slice(seenFrom).filter((s) => !s.own && s.target !== HEALTH);
    return { ref, seen, garbled: up.garbled.slice(garbledFrom), answers: c.answers, closed, clientGarbled: c.garbled };
  }

  type Outcome = Awaited<ReturnType<typeof exchange>>;
  const view = (r: { method: string; target: string; body: string }) => ({
    method: r.method,
    target: r.target,
    body: r.body,
  });

  /** What must hold for any bytes: no smuggling, an answer per request, clear refusals. */
  function checkAny(o: Outcome): void {
    const { ref, seen, answers } = o;
    expect(o.garbled, "bytes the homeserver could not read").toEqual([]);
    expect(o.clientGarbled, "response bytes the client could not read").toBeUndefined();
    // Smuggling: the homeserver saw exactly the first requests the reference reads.
    expect(seen.length, "requests the homeserver saw, against the reference's").toBeLessThanOrEqual(ref.reqs.length);
    expect(seen.map(view)).toEqual(ref.reqs.slice(0, seen.length).map(view));
    // One answer per request it saw, in order; then at most the front end's refusal.
    expect(answers.length).toBeGreaterThanOrEqual(seen.length);
    seen.forEach((s, i) => {
      expect(answers[i]!.status).toBe(200);
      expect(answers[i]!.headers["x-fz"]).toBe(String(s.seq));
    });
    const extra = answers.slice(seen.length);
    expect(extra.length, "answers beyond the homeserver's").toBeLessThanOrEqual(1);
    for (const a of answers) expect(a.status).not.toBe(500);
    const refused = extra[0];
    if (refused) {
      expect([400, 431, 501]).toContain(refused.status);
      expect(refused.headers["access-control-allow-origin"]).toBe("*");
      expect(refused.headers["content-type"]).toBe("application/json");
      // The answer to a HEAD has no body (RFC 9110 §9.3.2); any other carries the Matrix error.
      if (methodsOf(ref)[seen.length] === "HEAD") expect(refused.body).toBe("");
      else {
        const json = JSON.parse(refused.body) as { errcode?: unknown; error?: unknown };
        expect(typeof json.errcode).toBe("string");
        expect(typeof json.error).toBe("string");
      }
      expect(o.closed, "a refusal closes the connection").toBe(true);
    }
    if (seen.length < ref.reqs.length) {
      // The front end may refuse what the reference reads (its own limits), but says so.
      expect(refused, `request ${seen.length} was neither relayed nor refused`).toBeDefined();
      return;
    }
    switch (ref.end) {
      case "complete":
        expect(refused).toBeUndefined();
        expect(o.closed, "an idle keep-alive connection stays open").toBe(false);
        break;
      case "closed":
        expect(refused).toBeUndefined();
        expect(o.closed, "the connection closes after a closing request").toBe(true);
        break;
      case "invalid":
        expect(refused, `invalid bytes (${ref.why}) must be refused`).toBeDefined();
        break;
      case "incomplete":
        // A truncated request may wait for the rest; it is not dropped.
        expect(refused).toBeUndefined();
        expect(o.closed, "a connection waiting for the rest of a request is not dropped").toBe(false);
        break;
    }
  }

  // Regressions the properties found, as the exact writes that showed them.
  const regression = (writes: string[]) => async () => {
    const bytes = latin1(writes.join(""));
    const ref = reference(bytes);
    const c = await Client.connect(proxy.port, methodsOf(ref));
    const seenFrom = up.seen.length,
      garbledFrom = up.garbled.length;
    await c.send(writes.map(latin1));
    await settle(c, ref);
    const closed = c.closed;
    c.close();
    const seen = up.seen.slice(seenFrom).filter((s) => !s.own && s.target !== HEALTH);
    checkAny({
      ref,
      seen,
      garbled: up.garbled.slice(garbledFrom),
      answers: c.answers,
      closed,
      clientGarbled: c.garbled,
    });
  };

  test(
    "broken chunked framing in a later read is refused with a 400, not cut unanswered",
    regression(["POST /fz/ HTTP/1.1\r\nHost: hs.test\r\nTransfer-Encoding: chunked\r\n\r\n", "1\r\nbX"]),
  );

  test(
    "Connection naming Content-Length does not strip the length its body is relayed by",
    regression([
      "GET /fz/ HTTP/1.1\r\ncontent-length:1\r\nhost:hs.test\r\nconnection:content-length, keep-alive\r\n\r\n\x00",
    ]),
  );

  test(
    "Connection: Content-Length cannot smuggle a request in a body",
    regression([
      "POST /fz/ HTTP/1.1\r\nHost: hs.test\r\nContent-Length: 41\r\nConnection: Content-Length\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: hs.test\r\n\r\n",
    ]),
  );

  // String.trim() takes a NBSP (0xA0) too, but OWS is only SP and HTAB (RFC 9110 §5.6.3).
  test.each([
    ["a Content-Length with a NBSP", "GET /fz/ HTTP/1.1\r\nContent-Length: 3\xa0\r\nhost:hs.test\r\n\r\nabc"],
    [
      "a Transfer-Encoding with a NBSP",
      "POST /fz/ HTTP/1.1\r\nTransfer-Encoding: chunked\xa0\r\nhost:hs.test\r\n\r\n0\r\n\r\n",
    ],
  ])("%s is refused, not read as a number or as chunked", async (_what, bytes) => regression([bytes])());

  test.each([
    [
      "broken chunked framing in a later read",
      ["HEAD /fz/ HTTP/1.1\r\nHost: hs.test\r\nTransfer-Encoding: chunked\r\n\r\n", "1\r\nbX"],
    ],
    [
      "Content-Length with Transfer-Encoding",
      ["HEAD /fz/ HTTP/1.1\r\nHost: hs.test\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"],
    ],
  ])("a HEAD refused for %s gets a 400 without a body", async (_what, writes) => regression(writes)());

  test("a 502 in place of a HEAD's answer has no body, which the client would read as the next answer", async () => {
    const bytes = latin1(`HEAD ${DROP} HTTP/1.1\r\nHost: hs.test\r\n\r\nGET /fz/ HTTP/1.1\r\nHost: hs.test\r\n\r\n`);
    const ref = reference(bytes);
    const c = await Client.connect(proxy.port, methodsOf(ref));
    await c.send([bytes]);
    await settle(c, ref);
    c.close();
    expect(c.garbled).toBeUndefined();
    expect(c.answers.map((a) => [a.status, a.body === "", a.headers["x-fz"] !== undefined])).toEqual([
      [502, true, false],
      [200, false, true],
    ]);
  });

  test("well-formed requests, pipelined and cut into random writes, reach the homeserver exactly", {
    timeout: 120_000,
  }, async () => {
    await fc.assert(
      fc.asyncProperty(pipeline, cutting, async (specs, how) => {
        const bytes = latin1(specs.map(serialise).join(""));
        const o = await exchange(bytes, how);
        // The generator and the reference agree on what was sent.
        expect(o.ref.reqs.map(view)).toEqual(
          specs.map((s) => ({ method: s.method, target: s.target, body: s.framing === "none" ? "" : s.body })),
        );
        checkAny(o);
        expect(o.seen.length).toBe(specs.length);
        expect(o.answers.length).toBe(specs.length);
      }),
      { numRuns: RUNS(150), ...REPLAY },
    );
  });

  test("mutated requests: never smuggled, never a 500, never dropped unanswered", { timeout: 120_000 }, async () => {
    const input = fc.tuple(
      fc.array(fc.oneof(requestSpec, nastySpec), { minLength: 1, maxLength: 3 }),
      fc.array(mutation, { maxLength: 4 }),
      cutting,
    );
    await fc.assert(
      fc.asyncProperty(input, async ([specs, ms, how]) => {
        const bytes = mutate(latin1(specs.map(serialise).join("")), ms);
        checkAny(await exchange(bytes, how));
      }),
      { numRuns: RUNS(200), ...REPLAY },
    );
  });

  test("answers the front end makes in the homeserver's place keep a pipeline in step, HEAD included", {
    timeout: 120_000,
  }, async () => {
    await fc.assert(
      fc.asyncProperty(
        pipeline,
        fc.array(fc.boolean(), { minLength: 4, maxLength: 4 }),
        cutting,
        async (specs, drops, how) => {
          const sent = specs.map((s, i) => (drops[i] ? { ...s, target: DROP + s.target.slice("/fz/".length) } : s));
          const bytes = latin1(sent.map(serialise).join(""));
          const ref = reference(bytes);
          const c = await Client.connect(proxy.port, methodsOf(ref));
          await c.send(pieces(bytes, how));
          await settle(c, ref);
          const closed = c.closed;
          c.close();
          expect(c.garbled).toBeUndefined();
          expect(c.answers.map((a) => a.status)).toEqual(sent.map((_, i) => (drops[i] ? 502 : 200)));
          c.answers.forEach((a, i) => {
            if (!drops[i]) return expect(a.headers["x-fz"]).toBeDefined();
            if (sent[i]!.method === "HEAD") return expect(a.body).toBe("");
            const json = JSON.parse(a.body) as { errcode?: unknown; error?: unknown };
            expect(typeof json.errcode).toBe("string");
            expect(typeof json.error).toBe("string");
          });
          expect(closed).toBe(ref.end === "closed");
        },
      ),
      { numRuns: RUNS(100), ...REPLAY },
    );
  });
});
