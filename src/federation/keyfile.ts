// Loading the homeserver's federation signing key. The proxy must sign with the homeserver's
// own key: remote servers fetch the verifying key from https://<server name>/_matrix/key/v2/server,
// which the homeserver answers (server-server-api §Retrieving server keys).
//
// Formats, detected by content rather than file name:
//   - Synapse `signing_key_path`: lines `ed25519 <version> <unpadded base64 32-byte seed>`
//     (signedjson `read_signing_keys`); Synapse signs with the first key.
//   - Dendrite `private_key` (matrix_key.pem): a PEM block `MATRIX PRIVATE KEY` whose headers
//     carry `Key-ID: ed25519:<version>`, body = the 32-byte seed (Dendrite `readKeyPEM`).
//     Some Dendrite tooling writes Go's whole `ed25519.PrivateKey` instead: 64 bytes, the seed
//     then its public key (RFC 8032 §5.1.5). Accepted only when the second half really is the
//     public key of the first, so a corrupted or mismatched file is never half-used.
//   - Conduit/conduwuit keep the key in their database, so they get a seed + key id via config.
//
// Error messages are one line, name the file (or flag) and never contain key material: a
// start-up error lands in logs that are shared far more widely than the key file.

import { readFile } from "node:fs/promises";
import { decodeBase64, encodeBase64Unpadded } from "./base64.ts";
import { keyVersionProblem, signingKeyFromSeed, type SigningKey } from "./signing.ts";

export class KeyFileError extends Error {
  override name = "KeyFileError";
}

const EXPECTED =
  "expected a Synapse signing key (`ed25519 <version> <base64 seed>`) or a Dendrite PEM (`-----BEGIN MATRIX PRIVATE KEY-----`)";

export async function loadSigningKey(path: string): Promise<SigningKey> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    const why =
      code === "ENOENT"
        ? "file does not exist"
        : code === "EACCES"
          ? "permission denied"
          : code === "EISDIR"
            ? "is a directory"
            : `cannot be read (${String(code ?? err)})`;
    throw new KeyFileError(`${path}: ${why}; ${EXPECTED}`);
  }
  const problem = (what: string): KeyFileError => new KeyFileError(`${path}: ${what}`);
  if (text.includes("-----BEGIN ")) return fromPem(text, problem);
  return fromSynapse(text, problem);
}

/** Conduit/conduwuit: seed and key id come from configuration; `source` names the flag/env. */
export function signingKeyFromConfig(seedBase64: string, keyId: string, source: string): SigningKey {
  const version = versionFromKeyId(keyId, (what) => new KeyFileError(`${source}: ${what}`));
  return keyFromSeedText(seedBase64.trim(), version, (what) => new KeyFileError(`${source}: ${what}`));
}

type Problem = (what: string) => KeyFileError;

function versionFromKeyId(keyId: string, problem: Problem): string {
  if (!keyId.startsWith("ed25519:")) {
    throw problem(`key id ${JSON.stringify(keyId)} must start with "ed25519:" (only ed25519 keys exist in Matrix)`);
  }
  const version = keyId.slice("ed25519:".length);
  const bad = keyVersionProblem(version);
  if (bad) throw problem(bad);
  return version;
}

function keyFromSeedText(seedText: string, version: string, problem: Problem, allowSeedAndPublic = false): SigningKey {
  let seed: Uint8Array;
  try {
    seed = decodeBase64(seedText);
  } catch (err) {
    // decodeBase64's messages name offsets only, never content.
    throw problem(`the key is not valid base64 (${(err as Error).message}); expected a 32-byte ed25519 seed`);
  }
  try {
    if (allowSeedAndPublic && seed.length === 64) return fromSeedAndPublic(seed, version, problem);
    if (seed.length !== 32) {
      throw problem(`the key decodes to ${seed.length} bytes; expected a 32-byte ed25519 seed`);
    }
    return signingKeyFromSeed(seed, version);
  } finally {
    seed.fill(0);
  }
}

/** Go's ed25519.PrivateKey layout: seed (32 bytes) || public key (32 bytes). */
function fromSeedAndPublic(bytes: Uint8Array, version: string, problem: Problem): SigningKey {
  const key = signingKeyFromSeed(bytes.subarray(0, 32), version);
  // Public halves only are compared and named; nothing here can reveal the seed.
  if (encodeBase64Unpadded(bytes.subarray(32)) !== key.publicKey) {
    throw problem(
      "the key decodes to 64 bytes, but the last 32 are not the public key of the first 32; expected a 32-byte ed25519 seed, or a seed followed by its public key",
    );
  }
  return key;
}

function fromSynapse(text: string, problem: Problem): SigningKey {
  // signedjson reads `algorithm version key` per line. We sign with the first line that is a
  // valid ed25519 key (what Synapse uses); blank lines are skipped. If no line is usable the
  // error describes the first bad line, by number, without echoing its content.
  let firstProblem: string | undefined;
  const lines = text.split(/\r?\n/);
  for (let n = 0; n < lines.length; n++) {
    const fields = lines[n]!.trim().split(/\s+/);
    if (fields.length === 1 && fields[0] === "") continue;
    const why = synapseLineProblem(fields);
    if (why === undefined) {
      try {
        return keyFromSeedText(fields[2]!, fields[1]!, (what) => new KeyFileError(what));
      } catch (err) {
        firstProblem ??= `line ${n + 1}: ${(err as Error).message}`;
        continue;
      }
    }
    firstProblem ??= `line ${n + 1}: ${why}`;
  }
  throw problem(`${firstProblem ?? "file is empty"}; ${EXPECTED}`);
}

function synapseLineProblem(fields: string[]): string | undefined {
  if (fields.length !== 3) return `has ${fields.length} fields, not 3 (\`ed25519 <version> <base64 seed>\`)`;
  if (fields[0] !== "ed25519") return `algorithm is not "ed25519"`;
  return keyVersionProblem(fields[1]!);
}

function fromPem(text: string, problem: Problem): SigningKey {
  const blocks = [...text.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g)];
  const block = blocks.find((b) => b[1] === "MATRIX PRIVATE KEY");
  if (!block) {
    const types = blocks.map((b) => b[1]).join(", ") || "none complete";
    throw problem(`no "MATRIX PRIVATE KEY" PEM block (found: ${types}); ${EXPECTED}`);
  }
  // RFC 1421 style: header lines `Name: value`, a blank line, then the base64 body. A base64
  // body never contains ":", so leading lines with one are headers even if the blank is missing.
  const inner = block[2]!.split(/\r?\n/);
  let keyId: string | undefined;
  let i = 0;
  for (; i < inner.length && inner[i]!.includes(":"); i++) {
    const line = inner[i]!;
    const colon = line.indexOf(":");
    if (line.slice(0, colon).trim().toLowerCase() === "key-id") keyId = line.slice(colon + 1).trim();
  }
  const bodyLines = inner.slice(i);
  if (keyId === undefined) throw problem(`MATRIX PRIVATE KEY block has no "Key-ID: ed25519:<version>" header`);
  const version = versionFromKeyId(keyId, problem);
  return keyFromSeedText(bodyLines.map((l) => l.trim()).join(""), version, problem, true);
}
