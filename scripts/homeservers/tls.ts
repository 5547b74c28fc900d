// A throw-away CA and one leaf certificate for both homeservers, made with the openssl CLI.
// Both server names are "localhost" with a port, so one leaf with SAN DNS:localhost serves
// both (server-server-api §Resolving server names step 2: the certificate must be valid for
// the hostname). IP:127.0.0.1 is there too for clients that connect by address.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface TlsFiles {
  caPath: string;
  certPath: string;
  keyPath: string;
}

export function tlsFiles(dir: string): TlsFiles {
  return { caPath: join(dir, "ca.pem"), certPath: join(dir, "localhost.pem"), keyPath: join(dir, "localhost.key") };
}

async function openssl(cwd: string, args: string[]): Promise<void> {
  try {
    await run("openssl", args, { cwd });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? "";
    throw new Error(`openssl ${args[0]} failed: ${stderr.trim() || String(err)}`);
  }
}

/** Creates the CA and leaf once; later calls reuse them (they are valid for years). */
export async function ensureTls(dir: string): Promise<TlsFiles> {
  const files = tlsFiles(dir);
  if (existsSync(files.caPath) && existsSync(files.certPath) && existsSync(files.keyPath)) return files;
  await mkdir(dir, { recursive: true });
  await openssl(dir, [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-sha256",
    "-days",
    "3650",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-subj",
    "/CN=matrix-resync-proxy harness CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  await openssl(dir, [
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-sha256",
    "-keyout",
    "localhost.key",
    "-out",
    "localhost.csr",
    "-subj",
    "/CN=localhost",
  ]);
  await writeFile(
    join(dir, "leaf.ext"),
    [
      "basicConstraints=CA:FALSE",
      "keyUsage=critical,digitalSignature,keyEncipherment",
      "extendedKeyUsage=serverAuth",
      "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
      "",
    ].join("\n"),
  );
  await openssl(dir, [
    "x509",
    "-req",
    "-sha256",
    "-days",
    "825",
    "-in",
    "localhost.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-extfile",
    "leaf.ext",
    "-out",
    "localhost.pem",
  ]);
  return files;
}
