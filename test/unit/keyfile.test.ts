import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Buffer } from "node:buffer";
import { KeyFileError, loadSigningKey, signingKeyFromConfig } from "../../src/federation/keyfile.ts";
import { signingKeyFromSeed } from "../../src/federation/signing.ts";

// Spec test key (non-zero trailing bits in its unpadded form).
const SEED_B64 = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
const PUBLIC = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI";
const OTHER_SEED = new Uint8Array(32).map((_, i) => (i * 37 + 11) & 0xff);
const OTHER_B64 = Buffer.from(OTHER_SEED).toString("base64"); // padded, like Go's pem encoder
const OTHER_PUBLIC = signingKeyFromSeed(OTHER_SEED, "x").publicKey;
/** A Go ed25519.PrivateKey: the seed then the (unpadded base64) public key, padded base64 like Go's pem encoder. */
const seedPlusPublic = (seed: Uint8Array, pub: string): string =>
  Buffer.concat([seed, Buffer.from(pub, "base64")]).toString("base64");

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "keyfile-test-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let n = 0;
async function file(content: string): Promise<string> {
  const path = join(dir, `key-${n++}`);
  await writeFile(path, content);
  return path;
}

const pem = (headers: string, body: string, type = "MATRIX PRIVATE KEY"): string =>
  `-----BEGIN ${type}-----\n${headers}${headers ? "\n\n" : ""}${body}\n-----END ${type}-----\n`;

/** Assert a KeyFileError whose message is one line, starts with `<where>: ` and leaks no seed. */
async function expectKeyError(load: Promise<unknown>, where: string, what: RegExp): Promise<void> {
  const err = await load.then(
    () => expect.unreachable("expected a KeyFileError"),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(KeyFileError);
  const message = (err as Error).message;
  expect(message.startsWith(`${where}: `)).toBe(true);
  expect(message).not.toContain("\n");
  expect(message).toMatch(what);
  for (const secret of [SEED_B64.slice(0, 16), OTHER_B64.slice(0, 16), "c2VjcmV0c2Vj"]) {
    expect(message).not.toContain(secret);
  }
}

describe("loadSigningKey: Synapse format", () => {
  it("loads the spec key and derives its public key", async () => {
    const key = await loadSigningKey(await file(`ed25519 a_AbC9 ${SEED_B64}\n`));
    expect(key.keyId).toBe("ed25519:a_AbC9");
    expect(key.version).toBe("a_AbC9");
    expect(key.publicKey).toBe(PUBLIC);
  });

  it("signs with the first key when there are several; tolerates CRLF, blanks and padding", async () => {
    const key = await loadSigningKey(
      await file(`\r\n  ed25519 first ${OTHER_B64}  \r\ned25519 second ${SEED_B64}\r\n`),
    );
    expect(key.keyId).toBe("ed25519:first");
    expect(key.publicKey).toBe(OTHER_PUBLIC);
  });

  it("skips an invalid line before the first valid one", async () => {
    const key = await loadSigningKey(await file(`ed25519 broken\ned25519 good ${SEED_B64}\n`));
    expect(key.keyId).toBe("ed25519:good");
  });

  it.each([
    ["an empty file", "", /file is empty/],
    ["a line with two fields", `ed25519 ${SEED_B64}\n`, /line 1: has 2 fields/],
    ["another algorithm", `curve25519 1 ${SEED_B64}\n`, /line 1: algorithm is not "ed25519"/],
    ["a bad version", `ed25519 a"b ${SEED_B64}\n`, /line 1: key version/],
    ["invalid base64", `ed25519 1 c2VjcmV0c2Vj!!\n`, /line 1: .*not valid base64/],
    ["a 9-byte seed", `ed25519 1 c2VjcmV0c2Vj\n`, /line 1: .*decodes to 9 bytes; expected a 32-byte/],
    ["URL-safe base64", `ed25519 1 ${SEED_B64.replace("+", "-")}\n`, /not valid base64/],
    ["the first bad line among several", `\n\nnonsense\ned25519 1 c2VjcmV0c2Vj\n`, /line 3: has 1 fields/],
  ])("rejects %s with a one-line error naming the file", async (_name, content, what) => {
    const path = await file(content);
    await expectKeyError(loadSigningKey(path), path, what);
  });
});

describe("loadSigningKey: Dendrite PEM format", () => {
  it("loads a Go-style PEM block", async () => {
    const key = await loadSigningKey(await file(pem("Key-ID: ed25519:auto", OTHER_B64)));
    expect(key.keyId).toBe("ed25519:auto");
    expect(key.publicKey).toBe(OTHER_PUBLIC);
  });

  it("accepts headers without the blank separator line", async () => {
    const text = `-----BEGIN MATRIX PRIVATE KEY-----\nKey-ID: ed25519:nb\n${OTHER_B64}\n-----END MATRIX PRIVATE KEY-----\n`;
    const key = await loadSigningKey(await file(text));
    expect(key.keyId).toBe("ed25519:nb");
    expect(key.publicKey).toBe(OTHER_PUBLIC);
  });

  it("finds the MATRIX PRIVATE KEY block among others and accepts wrapped/unpadded bodies", async () => {
    const other = pem("", "AAAA", "CERTIFICATE");
    const wrapped = `${SEED_B64.slice(0, 20)}\r\n${SEED_B64.slice(20)}`;
    const key = await loadSigningKey(
      await file(`comment\n${other}${pem("Proc-Type: x\nKey-ID: ed25519:a_1", wrapped)}`),
    );
    expect(key.keyId).toBe("ed25519:a_1");
    expect(key.publicKey).toBe(PUBLIC);
  });

  // Go's ed25519.PrivateKey is seed || public key; some Dendrite tooling writes it whole.
  it("loads a 64-byte body: the seed followed by its own public key", async () => {
    const key = await loadSigningKey(await file(pem("Key-ID: ed25519:go64", seedPlusPublic(OTHER_SEED, OTHER_PUBLIC))));
    expect(key.keyId).toBe("ed25519:go64");
    expect(key.publicKey).toBe(OTHER_PUBLIC);
  });

  it.each([
    ["a missing Key-ID header", pem("", OTHER_B64), /no "Key-ID: ed25519:<version>" header/],
    ["a non-ed25519 Key-ID", pem("Key-ID: rsa:1", OTHER_B64), /must start with "ed25519:"/],
    ["an empty key version", pem("Key-ID: ed25519:", OTHER_B64), /key version/],
    [
      "an openssl PKCS#8 key",
      pem("", "MC4CAQAwBQYDK2VwBCIEIGCQwQPV569rFalw/VY+11VJ5hWXGa5cPDHe5DFvt1wN", "PRIVATE KEY"),
      /no "MATRIX PRIVATE KEY" PEM block \(found: PRIVATE KEY\)/,
    ],
    [
      "a truncated block",
      `-----BEGIN MATRIX PRIVATE KEY-----\nKey-ID: ed25519:1\n\n${OTHER_B64}\n`,
      /found: none complete/,
    ],
    [
      "a 64-byte body whose second half is not the first half's public key",
      pem("Key-ID: ed25519:1", Buffer.alloc(64, 3).toString("base64")),
      /64 bytes, but the last 32 are not the public key of the first 32/,
    ],
    [
      "a 64-byte body pairing our seed with another key's public key",
      pem("Key-ID: ed25519:1", seedPlusPublic(OTHER_SEED, PUBLIC)),
      /64 bytes, but the last 32 are not the public key/,
    ],
    [
      "a 48-byte body",
      pem("Key-ID: ed25519:1", Buffer.alloc(48, 3).toString("base64")),
      /decodes to 48 bytes; expected a 32-byte ed25519 seed/,
    ],
    ["a corrupt body", pem("Key-ID: ed25519:1", "c2VjcmV0c2Vj*AAA"), /not valid base64/],
  ])("rejects %s with a one-line error naming the file", async (_name, content, what) => {
    const path = await file(content);
    await expectKeyError(loadSigningKey(path), path, what);
  });
});

describe("loadSigningKey: unreadable paths", () => {
  it("names a missing file and what was expected", async () => {
    const path = join(dir, "does-not-exist.key");
    await expectKeyError(loadSigningKey(path), path, /file does not exist; expected a Synapse signing key/);
  });

  it("names a directory", async () => {
    await expectKeyError(loadSigningKey(dir), dir, /is a directory|cannot be read/);
  });
});

describe("signingKeyFromConfig (Conduit/conduwuit)", () => {
  it("builds the key from a seed and key id", () => {
    const key = signingKeyFromConfig(` ${SEED_B64}\n`, "ed25519:1", "--signing-key-seed");
    expect(key.keyId).toBe("ed25519:1");
    expect(key.publicKey).toBe(PUBLIC);
  });

  it.each([
    ["a key id without algorithm", SEED_B64, "1", /key id "1" must start with "ed25519:"/],
    ["a bad version", SEED_B64, "ed25519:a b", /key version/],
    ["a short seed", "c2VjcmV0c2Vj", "ed25519:1", /decodes to 9 bytes/],
    ["invalid base64", "c2VjcmV0c2Vj$", "ed25519:1", /not valid base64/],
  ])("rejects %s naming the source", async (_name, seed, keyId, what) => {
    await expectKeyError(
      Promise.resolve().then(() => signingKeyFromConfig(seed, keyId, "RESYNC_SIGNING_KEY_SEED")),
      "RESYNC_SIGNING_KEY_SEED",
      what,
    );
  });
});
