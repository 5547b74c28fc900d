// Just enough Matrix signing for the e2e tests: canonical JSON of plain ASCII data and
// Ed25519 signatures (appendices §Signing JSON). Deliberately independent of src/ so the
// harness checks the proxy against a second implementation rather than against itself.
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Canonical JSON for the test's own data (ASCII keys, integers): sorted keys, no spaces. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

export const unpadded = (b: Buffer): string => b.toString("base64").replace(/=+$/, "");

export interface Ed25519Key {
  privateKey: KeyObject;
  /** Unpadded standard base64 of the 32-byte public key. */
  publicKey: string;
}

// PKCS#8 DER prefix for a raw Ed25519 seed (RFC 8410 §7).
const pkcs8Prefix = Buffer.from("302e020100300506032b657004220420", "hex");

export function ed25519FromSeed(seed: Buffer): Ed25519Key {
  const privateKey = createPrivateKey({ key: Buffer.concat([pkcs8Prefix, seed]), format: "der", type: "pkcs8" });
  const spki = createPublicKey(privateKey).export({ format: "der", type: "spki" });
  return { privateKey, publicKey: unpadded(spki.subarray(spki.length - 32)) };
}

export function newEd25519(): Ed25519Key {
  const { privateKey } = generateKeyPairSync("ed25519");
  const spki = createPublicKey(privateKey).export({ format: "der", type: "spki" });
  return { privateKey, publicKey: unpadded(spki.subarray(spki.length - 32)) };
}

/** A Curve25519 public key, as a client would publish for Olm. */
export function newCurve25519Public(): string {
  const { publicKey } = generateKeyPairSync("x25519");
  const spki = publicKey.export({ format: "der", type: "spki" });
  return unpadded(spki.subarray(spki.length - 32));
}

export function signatureOf(key: Ed25519Key, object: Record<string, unknown>): string {
  const { signatures: _s, unsigned: _u, ...rest } = object;
  return unpadded(sign(null, Buffer.from(canonicalJson(rest)), key.privateKey));
}

/** Adds `signatures[entity][keyId]` to `object` (returns a new object). */
export function signJson<T extends Record<string, unknown>>(
  object: T,
  entity: string,
  keyId: string,
  key: Ed25519Key,
): T {
  const sig = signatureOf(key, object);
  const signatures = { ...((object.signatures as Record<string, Record<string, string>>) ?? {}) };
  signatures[entity] = { ...(signatures[entity] ?? {}), [keyId]: sig };
  return { ...object, signatures };
}

export interface ServerKey extends Ed25519Key {
  keyId: string;
}

/** Reads a Synapse signing key file: first line `ed25519 <version> <seed b64>` signs. */
export async function readSynapseKey(path: string): Promise<ServerKey> {
  const line = (await readFile(path, "utf8")).split("\n")[0] ?? "";
  const [alg, version, seed] = line.trim().split(/\s+/);
  if (alg !== "ed25519" || !version || !seed) throw new Error(`${path}: not a Synapse signing key`);
  return { keyId: `ed25519:${version}`, ...ed25519FromSeed(Buffer.from(seed, "base64")) };
}
