// Test PKI made with the `openssl` CLI: a throw-away CA and leaf certificates with the
// subjectAltName entries a test needs. Nothing here is trusted outside the test that made it.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { IncomingHttpHeaders, ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { TLSSocket } from "node:tls";

export interface LeafCert {
  key: string;
  cert: string;
}

export interface TestCa {
  /** PEM of the CA certificate, to pass as an extra trusted root. */
  caPem: string;
  /** sans like ["DNS:example.test", "IP:127.0.0.1"]; an empty list gives a cert with no SAN. */
  issue(commonName: string, sans: readonly string[]): LeafCert;
  cleanup(): void;
}

function openssl(cwd: string, args: string[]): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

// P-256 keys: quick to generate and accepted by OpenSSL (Node, Deno) and BoringSSL (Bun).
const KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

export function createTestCa(label = "matrix-resync-proxy test CA"): TestCa {
  const dir = mkdtempSync(join(tmpdir(), "mrp-ca-"));
  openssl(dir, [
    "req",
    "-x509",
    ...KEY_ARGS,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "3",
    "-subj",
    `/CN=${label}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  const caPem = readFileSync(join(dir, "ca.pem"), "utf8");
  let serial = 1;
  return {
    caPem,
    issue(commonName, sans) {
      const n = serial++;
      const ext = [
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature",
        "extendedKeyUsage=serverAuth",
        ...(sans.length > 0 ? [`subjectAltName=${sans.join(",")}`] : []),
      ].join("\n");
      writeFileSync(join(dir, `leaf${n}.ext`), ext + "\n");
      openssl(dir, [
        "req",
        ...KEY_ARGS,
        "-keyout",
        `leaf${n}.key`,
        "-out",
        `leaf${n}.csr`,
        "-subj",
        `/CN=${commonName}`,
      ]);
      openssl(dir, [
        "x509",
        "-req",
        "-in",
        `leaf${n}.csr`,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        String(1000 + n),
        "-days",
        "2",
        "-out",
        `leaf${n}.pem`,
        "-extfile",
        `leaf${n}.ext`,
      ]);
      return {
        key: readFileSync(join(dir, `leaf${n}.key`), "utf8"),
        cert: readFileSync(join(dir, `leaf${n}.pem`), "utf8"),
      };
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface SeenRequest {
  method: string;
  url: string;
  host: string | undefined;
  /** SNI the client sent; null when it sent none. */
  servername: string | null;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The client's TCP port: which process sent it (replica tests look it up with `ss`). */
  remotePort?: number;
}

export interface TestHttpsServer {
  host: string;
  port: number;
  /** TCP connections accepted so far (counted before the TLS handshake). */
  readonly connections: number;
  /** TCP connections currently open. */
  readonly openSockets: number;
  requests: SeenRequest[];
  close(): Promise<void>;
}

export type TestHandler = (req: SeenRequest, res: ServerResponse) => void;

/** An HTTPS server on a loopback address; port 0 picks an ephemeral port. */
export async function startHttpsServer(opts: {
  host: string;
  port?: number;
  cert: LeafCert;
  handler: TestHandler;
}): Promise<TestHttpsServer> {
  const sockets = new Set<Socket>();
  const requests: SeenRequest[] = [];
  let connections = 0;
  const server = createHttpsServer({ key: opts.cert.key, cert: opts.cert.cert }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const tlsSocket = req.socket as TLSSocket;
      const seen: SeenRequest = {
        method: req.method ?? "",
        url: req.url ?? "",
        host: req.headers.host,
        servername:
          typeof tlsSocket.servername === "string" && tlsSocket.servername !== "" ? tlsSocket.servername : null,
        headers: req.headers,
        body: Buffer.concat(chunks),
      };
      if (tlsSocket.remotePort !== undefined) seen.remotePort = tlsSocket.remotePort;
      requests.push(seen);
      opts.handler(seen, res);
    });
  });
  server.on("connection", (s: Socket) => {
    connections++;
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, opts.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  return {
    host: opts.host,
    port: address.port,
    get connections() {
      return connections;
    },
    get openSockets() {
      return sockets.size;
    },
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A handler answering JSON with optional extra headers. */
export function json(body: unknown, status = 200, headers: Record<string, string> = {}): TestHandler {
  return (_req, res) => {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(text),
      ...headers,
    });
    res.end(text);
  };
}
