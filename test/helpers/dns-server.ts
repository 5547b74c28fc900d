// A tiny authoritative DNS server for tests (dns2, UDP, 127.0.0.1 on an ephemeral port).
// Names not in the zone get NXDOMAIN; a known name without records of the asked type gets
// an empty NOERROR answer (NODATA). Every query is recorded so tests can assert on lookups.
import { createRequire } from "node:module";
import type DNS from "dns2";

// dns2's ESM wrapper does `import x from "./index.js"`, which Deno's loader rejects; the
// CommonJS entry loads the same code on every runtime.
const dns2 = createRequire(import.meta.url)("dns2") as typeof DNS;
const { Packet } = dns2;

export interface SrvAnswer {
  target: string;
  port: number;
  priority?: number;
  weight?: number;
}

interface Entry {
  a: string[];
  aaaa: string[];
  srv: SrvAnswer[];
}

export interface TestDnsServer {
  /** "127.0.0.1:<port>", the form `--dns-server` takes. */
  address: string;
  queries: { name: string; type: string }[];
  setA(name: string, ...ips: string[]): void;
  setAAAA(name: string, ...ips: string[]): void;
  setSrv(name: string, ...records: SrvAnswer[]): void;
  /** Make `name` exist with no records (NODATA instead of NXDOMAIN). */
  touch(name: string): void;
  close(): Promise<void>;
}

const NXDOMAIN = 3; // RFC 1035 §4.1.1 RCODE 3, "Name Error"
const TYPE_NAMES: Record<number, string> = { 1: "A", 28: "AAAA", 33: "SRV" };

export async function startDnsServer(): Promise<TestDnsServer> {
  const zone = new Map<string, Entry>();
  const queries: { name: string; type: string }[] = [];
  const entry = (name: string): Entry => {
    const key = name.toLowerCase();
    let e = zone.get(key);
    if (!e) zone.set(key, (e = { a: [], aaaa: [], srv: [] }));
    return e;
  };

  const server = dns2.createServer({
    udp: true,
    handle: (request, send) => {
      const response = Packet.createResponseFromRequest(request);
      const [q] = request.questions;
      if (!q) return send(response);
      queries.push({ name: q.name, type: TYPE_NAMES[q.type] ?? String(q.type) });
      const e = zone.get(q.name.toLowerCase());
      if (!e) {
        response.header.rcode = NXDOMAIN;
        return send(response);
      }
      // dns2's typings want full Resource objects; its encoder only reads these fields.
      const answers = response.answers as unknown[];
      const base = { name: q.name, class: Packet.CLASS.IN, ttl: 60 };
      if (q.type === Packet.TYPE.A) for (const address of e.a) answers.push({ ...base, type: Packet.TYPE.A, address });
      if (q.type === Packet.TYPE.AAAA)
        for (const address of e.aaaa) answers.push({ ...base, type: Packet.TYPE.AAAA, address });
      if (q.type === Packet.TYPE.SRV) {
        for (const r of e.srv) {
          answers.push({
            ...base,
            type: Packet.TYPE.SRV,
            priority: r.priority ?? 10,
            weight: r.weight ?? 0,
            port: r.port,
            target: r.target,
          });
        }
      }
      send(response);
    },
  });
  await server.listen({ udp: { port: 0, address: "127.0.0.1" } });
  const udp = server.addresses().udp;
  if (!udp) throw new Error("dns2 server did not bind UDP");

  return {
    address: `127.0.0.1:${udp.port}`,
    queries,
    setA: (name, ...ips) => void (entry(name).a = ips),
    setAAAA: (name, ...ips) => void (entry(name).aaaa = ips),
    setSrv: (name, ...records) => void (entry(name).srv = records),
    touch: (name) => void entry(name),
    close: () => server.close(),
  };
}
