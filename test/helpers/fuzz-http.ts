// What the two front-end fuzz tests (front-fuzz*.test.ts) share: HTTP/1.1 text generators, and
// cutting bytes into the writes a peer makes.
import net from "node:net";
import fc from "fast-check";

export const CR = 13,
  LF = 10;
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const latin1 = (s: string) => Buffer.from(s, "latin1");
export const hex = (n: number) => n.toString(16);
/** OWS is SP and HTAB only (RFC 9110 §5.6.3): String.trim() would take more. */
export const owsTrim = (s: string) => s.replace(/^[ \t]+|[ \t]+$/g, "");

export function isHex(c: number | undefined): boolean {
  return c !== undefined && ((c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102));
}

export const randomCase = (s: string) =>
  fc
    .array(fc.boolean(), { minLength: s.length, maxLength: s.length })
    .map((up) => [...s].map((c, i) => (up[i] ? c.toUpperCase() : c.toLowerCase())).join(""));
export const ows = fc.constantFrom("", "", " ", "\t", "  ", " \t");
const valueUnit = fc
  .oneof(
    { weight: 8, arbitrary: fc.integer({ min: 0x21, max: 0x7e }) },
    fc.constantFrom(0x20, 0x09),
    fc.integer({ min: 0x80, max: 0xff }),
  )
  .map((c) => String.fromCharCode(c));
/** Field-value text: visible ASCII, SP/HTAB inside, obs-text. */
export const fieldText = (maxLength: number) => fc.string({ unit: valueUnit, maxLength });
/** Well-known names in random case, or made-up X- names. */
export const fieldName = (known: string[]) =>
  fc.oneof(
    fc.constantFrom(...known).chain(randomCase),
    fc
      .string({ unit: fc.constantFrom(..."!#$%&'*+-.^_`|~09azAZ".split("")), minLength: 1, maxLength: 8 })
      .map((s) => `X-${s}`),
  );
export const chunkExt = fc.constantFrom(";a", ";a=b", ';q="x;\\"y"', " ;a=1", "\t;b", ";");

/** How bytes go out: whole, cut at random places, a byte per write over a stretch, or cut where parsers decide. */
export type Cutting = "whole" | { bytesFrom: number; n: number } | { at: number[] } | { worst: number[] };
export const cutting: fc.Arbitrary<Cutting> = fc.oneof(
  fc.constant("whole" as const),
  fc.record({ bytesFrom: fc.nat(), n: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ at: fc.array(fc.nat(), { minLength: 1, maxLength: 16 }) }),
  fc.record({ worst: fc.array(fc.nat(), { minLength: 1, maxLength: 10 }) }),
);

/** The writes: each becomes a read of its own at the other end, mostly (the writer waits a timer's turn between them). */
export function pieces(b: Buffer, how: Cutting): Buffer[] {
  if (how === "whole" || b.length === 0) return [b];
  let at: number[];
  if ("at" in how) at = how.at.map((x) => x % b.length);
  else if ("worst" in how) {
    // Between CR and LF, inside and around chunk-size lines, at separators.
    const points: number[] = [];
    for (let i = 1; i < b.length; i++)
      if (
        b[i - 1] === CR ||
        b[i] === CR ||
        b[i] === 59 ||
        b[i] === 58 ||
        (isHex(b[i]) && (b[i - 1] === LF || isHex(b[i - 1])))
      )
        points.push(i);
    if (points.length === 0) return [b];
    at = how.worst.map((x) => points[x % points.length]!);
  } else {
    const from = how.bytesFrom % b.length;
    at = Array.from({ length: Math.min(how.n, b.length - from) }, (_, i) => from + i);
  }
  at = [...new Set(at)].filter((x) => x > 0).sort((x, y) => x - y);
  return [0, ...at].map((s, i) => b.subarray(s, at[i] ?? b.length));
}

/** A raw TCP server on 127.0.0.1 (the fuzz tests' homeserver); close() drops its connections too. */
export async function rawServer(
  onConnection: (s: net.Socket) => void,
): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => {});
    onConnection(s);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A chunked body at `at`, strictly (RFC 9112 §7.1: extensions as any bytes but CR, LF and NUL; trailer lines as any
 * bytes but CR and LF): its end and payload, or why not. */
export function readChunked(
  b: Buffer,
  at: number,
): { end: number; payload: string } | "incomplete" | { invalid: string } {
  let q = at;
  let payload = "";
  for (;;) {
    let size = 0,
      digits = 0;
    for (; isHex(b[q]); q++) {
      if (++digits > 12) return { invalid: "chunk size over 12 digits" };
      size = size * 16 + parseInt(String.fromCharCode(b[q]!), 16);
    }
    if (q >= b.length) return "incomplete";
    if (digits === 0) return { invalid: "no chunk size" };
    if (b[q] === 59 || b[q] === 32 || b[q] === 9)
      for (q++; q < b.length && b[q] !== CR; q++)
        if (b[q] === LF || b[q] === 0) return { invalid: "LF or NUL in a chunk extension" };
    if (q >= b.length) return "incomplete";
    if (b[q] !== CR) return { invalid: "bad chunk size line" };
    if (++q >= b.length) return "incomplete";
    if (b[q++] !== LF) return { invalid: "bare CR after chunk size" };
    if (size === 0) break;
    if (q + size > b.length) return "incomplete";
    payload += b.toString("latin1", q, q + size);
    q += size;
    if (q >= b.length) return "incomplete";
    if (b[q] !== CR) return { invalid: "no CRLF after chunk data" };
    if (++q >= b.length) return "incomplete";
    if (b[q++] !== LF) return { invalid: "no CRLF after chunk data" };
  }
  for (;;) {
    if (q >= b.length) return "incomplete";
    if (b[q] === CR) {
      if (q + 1 >= b.length) return "incomplete";
      return b[q + 1] === LF ? { end: q + 2, payload } : { invalid: "bare CR after trailers" };
    }
    for (; q < b.length && b[q] !== CR; q++) if (b[q] === LF) return { invalid: "bare LF in a trailer" };
    if (q + 1 >= b.length) return "incomplete";
    if (b[q + 1] !== LF) return { invalid: "bare CR in a trailer" };
    q += 2;
  }
}
