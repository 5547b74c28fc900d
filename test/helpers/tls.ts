// Test PKI made with the `openssl` CLI: a throw-away CA and leaf certificates with the
// subjectAltName entries a test needs. Nothing here is trusted outside the test that made it.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

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
    "req", "-x509", ...KEY_ARGS, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3",
    "-subj", `/CN=${label}`,
    "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
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
        "req", ...KEY_ARGS, "-keyout", `leaf${n}.key`, "-out", `leaf${n}.csr`,
        "-subj", `/CN=${commonName}`,
      ]);
      openssl(dir, [
        "x509", "-req", "-in", `leaf${n}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key",
        "-set_serial", String(1000 + n), "-days", "2", "-out", `leaf${n}.pem`,
        "-extfile", `leaf${n}.ext`,
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
