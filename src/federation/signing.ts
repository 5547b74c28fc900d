// Ed25519 signing of JSON (appendices §Signing JSON) and X-Matrix request authentication
// (server-server-api §Request Authentication).
//
// Only node:crypto is used: its Ed25519 KeyObject works identically on Bun and Deno, and a
// KeyObject never exposes key material through enumeration, JSON or util.inspect.

import { Buffer } from "node:buffer";
import { createPrivateKey, createPublicKey, sign as edSign, verify as edVerify, type KeyObject } from "node:crypto";
import { canonicalJson } from "./canonical-json.ts";
import { decodeBase64, encodeBase64Unpadded } from "./base64.ts";

export interface SigningKey {
  readonly keyId: string; // "ed25519:<version>"
  readonly version: string;
  readonly publicKey: string; // unpadded base64 of the 32-byte public key
  sign(data: Uint8Array): Uint8Array; // raw 64-byte ed25519 signature
}

// ASN.1 prefixes that wrap a raw 32-byte Ed25519 seed / public key (RFC 8410 §7 and §4).
const PKCS8_ED25519_PREFIX = Uint8Array.from([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
]);
const SPKI_ED25519_PREFIX = Uint8Array.from([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]);

// The spec restricts key versions to [a-zA-Z0-9_], but older servers minted others (ruma
// has a compat flag for exactly that), so accept any visible ASCII except the characters that
// would break the X-Matrix header's quoted, comma-separated parameters.
const VERSION_RE = /^[\x21-\x7e]+$/;
const VERSION_FORBIDDEN = /["\\,]/;

/** Validate a key version; returns a reason when it cannot be used, else undefined. */
export function keyVersionProblem(version: string): string | undefined {
  if (!VERSION_RE.test(version) || VERSION_FORBIDDEN.test(version)) {
    return `key version ${JSON.stringify(version)} must be non-empty visible ASCII without '"', '\\' or ','`;
  }
  return undefined;
}

/**
 * Build a signing key from a raw 32-byte Ed25519 seed. The seed is copied into a DER buffer
 * that is zeroed once the KeyObject exists; afterwards the key material lives only inside the
 * KeyObject captured by `sign`'s closure, so no serialisation of the returned object shows it.
 */
export function signingKeyFromSeed(seed: Uint8Array, version: string): SigningKey {
  if (seed.length !== 32) throw new Error(`an ed25519 seed is 32 bytes, got ${seed.length}`);
  const problem = keyVersionProblem(version);
  if (problem) throw new Error(problem);

  const der = new Uint8Array(PKCS8_ED25519_PREFIX.length + 32);
  der.set(PKCS8_ED25519_PREFIX, 0);
  der.set(seed, PKCS8_ED25519_PREFIX.length);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: Buffer.from(der.buffer), format: "der", type: "pkcs8" });
  } finally {
    der.fill(0);
  }
  const spki = createPublicKey(privateKey).export({ format: "der", type: "spki" });
  const publicKey = encodeBase64Unpadded(new Uint8Array(spki.subarray(SPKI_ED25519_PREFIX.length)));

  return Object.freeze({
    keyId: `ed25519:${version}`,
    version,
    publicKey,
    sign(data: Uint8Array): Uint8Array {
      return new Uint8Array(edSign(null, data, privateKey));
    },
  });
}

const utf8 = new TextEncoder();

function withoutSignaturesAndUnsigned(obj: Record<string, unknown>): Record<string, unknown> {
  // Appendices §Signing JSON: `signatures` and `unsigned` are removed before encoding.
  const { signatures: _s, unsigned: _u, ...rest } = obj;
  return rest;
}

function isPlainRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Return a copy of `obj` with `signatures[entity][key.keyId]` added (existing signatures by
 * other entities or keys are kept). `unsigned` stays in the result but is not signed.
 */
export function signJson<T extends Record<string, unknown>>(obj: T, entity: string, key: SigningKey): T {
  const signed = canonicalJson(withoutSignaturesAndUnsigned(obj));
  const sig = encodeBase64Unpadded(key.sign(utf8.encode(signed)));
  const existing = obj.signatures;
  if (existing !== undefined && !isPlainRecord(existing)) {
    throw new TypeError("signJson: `signatures` must be an object when present");
  }
  const forEntity = existing?.[entity];
  if (forEntity !== undefined && !isPlainRecord(forEntity)) {
    throw new TypeError(`signJson: \`signatures.${entity}\` must be an object when present`);
  }
  return {
    ...obj,
    signatures: { ...existing, [entity]: { ...forEntity, [key.keyId]: sig } },
  };
}

/** Ed25519 public key object from unpadded/padded base64; throws unless exactly 32 bytes. */
function publicKeyFromBase64(publicKeyB64: string): KeyObject {
  const raw = decodeBase64(publicKeyB64);
  if (raw.length !== 32) throw new Error(`an ed25519 public key is 32 bytes, got ${raw.length}`);
  const der = new Uint8Array(SPKI_ED25519_PREFIX.length + 32);
  der.set(SPKI_ED25519_PREFIX, 0);
  der.set(raw, SPKI_ED25519_PREFIX.length);
  return createPublicKey({ key: Buffer.from(der.buffer), format: "der", type: "spki" });
}

/**
 * Does `obj.signatures[entity][keyId]` verify against `publicKeyB64`? Never throws: any
 * malformed input (non-object, missing signature, bad base64, non-canonical content such as
 * floats, non-ed25519 key id) is simply `false`.
 */
export function verifyJsonSignature(obj: unknown, entity: string, keyId: string, publicKeyB64: string): boolean {
  try {
    if (!keyId.startsWith("ed25519:") || !isPlainRecord(obj)) return false;
    const sigs = obj.signatures;
    if (!isPlainRecord(sigs)) return false;
    const forEntity = sigs[entity];
    if (!isPlainRecord(forEntity)) return false;
    const sigB64 = forEntity[keyId];
    if (typeof sigB64 !== "string") return false;
    const sig = decodeBase64(sigB64);
    if (sig.length !== 64) return false;
    const data = utf8.encode(canonicalJson(withoutSignaturesAndUnsigned(obj)));
    return edVerify(null, data, publicKeyFromBase64(publicKeyB64), sig);
  } catch {
    return false;
  }
}

export interface XMatrixRequest {
  method: string;
  uri: string;
  origin: string;
  destination: string;
  content?: unknown;
}

// Values go inside a quoted-string; server names and key ids never contain these, and
// Synapse's parser splits on "," without honouring quotes, so refuse rather than escape.
const HEADER_UNSAFE = /["\\,\x00-\x1f\x7f]/;

/**
 * `Authorization` header value for a federation request (server-server-api §Request
 * Authentication). Signs `{method, uri, origin, destination}` plus `content` only when the
 * request has a body. `uri` must be the exact path+query put on the wire (never re-encoded
 * afterwards: the receiver verifies against its raw request target). `destination` is the
 * target's server name before delegation. Parameter name `sig` is what every implementation
 * sends and parses (the spec prose says `signature`).
 */
export function xMatrixAuthorization(req: XMatrixRequest, key: SigningKey): string {
  if (!req.uri.startsWith("/")) throw new Error(`X-Matrix uri must be a path, got ${JSON.stringify(req.uri)}`);
  if (req.content !== undefined && (req.method === "GET" || req.method === "HEAD")) {
    // A GET is signed without content; signing one would produce a header no receiver accepts.
    throw new Error(`X-Matrix: ${req.method} requests carry no content to sign`);
  }
  for (const [name, value] of [
    ["origin", req.origin],
    ["destination", req.destination],
    ["key", key.keyId],
  ] as const) {
    if (value === "" || HEADER_UNSAFE.test(value)) {
      throw new Error(`X-Matrix ${name} ${JSON.stringify(value)} cannot be placed in the header`);
    }
  }
  const signed: Record<string, unknown> = {
    method: req.method,
    uri: req.uri,
    origin: req.origin,
    destination: req.destination,
  };
  if (req.content !== undefined) signed.content = req.content;
  const sig = encodeBase64Unpadded(key.sign(utf8.encode(canonicalJson(signed))));
  return `X-Matrix origin="${req.origin}",destination="${req.destination}",key="${key.keyId}",sig="${sig}"`;
}
