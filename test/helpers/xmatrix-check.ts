// An independent X-Matrix verifier for test fakes (server-server-api §Request Authentication).
//
// Deliberately shares NO code with src/: if src/federation/signing.ts and this file had a
// common bug (say, signing the decoded uri), a shared helper would let both agree on it. This
// file re-implements the header parsing, a minimal sorted-key JSON and Ed25519 verification.
// The minimal JSON sorts keys with JS `sort()` (UTF-16 order); fakes only sign ASCII keys.

import { createPublicKey, verify } from "node:crypto";
import { Buffer } from "node:buffer";

export type XMatrixKeys = Record<string /*origin*/, Record<string /*keyId*/, string /*pubkey b64*/>>;

export interface VerifyXMatrixOptions {
  method: string;
  /** The request target exactly as received on the wire (path + query), not decoded. */
  rawTarget: string;
  authorization: string | undefined;
  expectedDestination: string;
  keys: XMatrixKeys;
  /** The raw request body; when non-empty it is parsed and signed as `content`. */
  body?: string | Uint8Array;
}

export type VerifyXMatrixResult = { ok: true; origin: string } | { ok: false; reason: string };

export function verifyXMatrixRequest(opts: VerifyXMatrixOptions): VerifyXMatrixResult {
  const header = opts.authorization;
  if (header === undefined) return { ok: false, reason: "no Authorization header" };
  if (!header.startsWith("X-Matrix ")) return { ok: false, reason: "not an X-Matrix header" };

  const params: Record<string, string> = {};
  for (const part of header.slice("X-Matrix ".length).split(",")) {
    const eq = part.indexOf("=");
    if (eq < 0) return { ok: false, reason: `malformed parameter ${part}` };
    const name = part.slice(0, eq).trim().toLowerCase();
    let value = part.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
    if (name in params) return { ok: false, reason: `duplicate parameter ${name}` };
    params[name] = value;
  }
  const { origin, destination, key, sig } = params;
  if (!origin) return { ok: false, reason: "missing origin" };
  if (!key) return { ok: false, reason: "missing key" };
  if (!sig) return { ok: false, reason: "missing sig" };
  if (destination !== opts.expectedDestination) {
    return { ok: false, reason: `destination ${String(destination)} != ${opts.expectedDestination}` };
  }
  const pub = opts.keys[origin]?.[key];
  if (pub === undefined) return { ok: false, reason: `unknown key ${origin} ${key}` };

  const signed: Record<string, unknown> = { destination, method: opts.method, origin, uri: opts.rawTarget };
  const bodyText = typeof opts.body === "string" ? opts.body : opts.body ? Buffer.from(opts.body).toString("utf8") : "";
  if (bodyText !== "") {
    try {
      signed.content = JSON.parse(bodyText);
    } catch {
      return { ok: false, reason: "body is not JSON" };
    }
  }

  const spki = Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), Buffer.from(pub, "base64")]);
  const sigBytes = Buffer.from(sig, "base64");
  if (sigBytes.length !== 64) return { ok: false, reason: "sig is not 64 bytes" };
  const ok = verify(
    null,
    Buffer.from(sortedJson(signed), "utf8"),
    createPublicKey({ key: spki, format: "der", type: "spki" }),
    sigBytes,
  );
  return ok ? { ok: true, origin } : { ok: false, reason: "signature does not verify" };
}

function sortedJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(sortedJson).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${sortedJson(o[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}
