import { describe, expect, it } from "vitest";
import { inspect, format } from "node:util";
import { Buffer } from "node:buffer";
import {
  signJson,
  signingKeyFromSeed,
  verifyJsonSignature,
  xMatrixAuthorization,
} from "../../src/federation/signing.ts";
import { decodeBase64, encodeBase64Unpadded } from "../../src/federation/base64.ts";
import { verifyXMatrixRequest } from "../helpers/xmatrix-check.ts";
import { parseXMatrixAuthorization } from "../helpers/xmatrix-parse.ts";

// Vectors from docs/architecture.md "Signing test vectors" (the spec's test key; its seed has non-zero trailing bits).
const SEED_B64 = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
const PUBLIC = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI";
const key = signingKeyFromSeed(decodeBase64(SEED_B64), "1");
const URI = "/_matrix/federation/v1/user/devices/%40alice%3Aremote.example";

describe("signingKeyFromSeed", () => {
  it("derives the spec's public key and key id", () => {
    expect(key.keyId).toBe("ed25519:1");
    expect(key.version).toBe("1");
    expect(key.publicKey).toBe(PUBLIC);
  });

  it("rejects seeds that are not 32 bytes and header-breaking versions", () => {
    expect(() => signingKeyFromSeed(new Uint8Array(31), "1")).toThrow(/32 bytes/);
    expect(() => signingKeyFromSeed(new Uint8Array(64), "1")).toThrow(/32 bytes/);
    for (const v of ["", "a b", 'a"b', "a,b", "a\\b", "é"]) {
      expect(() => signingKeyFromSeed(new Uint8Array(32), v)).toThrow(/key version/);
    }
    expect(signingKeyFromSeed(new Uint8Array(32), "a_AbC9").keyId).toBe("ed25519:a_AbC9");
  });

  it("never exposes the seed through JSON, inspect, format or enumeration", () => {
    const seed = decodeBase64(SEED_B64);
    const k = signingKeyFromSeed(seed, "1");
    const seedHex = Buffer.from(seed).toString("hex");
    const seedB64 = Buffer.from(seed).toString("base64");
    const outputs = [
      JSON.stringify(k),
      inspect(k, { showHidden: true, depth: Infinity, getters: true }),
      format("%o %O %j %s", k, k, k, k),
      String(k),
      JSON.stringify(
        Object.getOwnPropertyNames(k).map((n) => [n, String((k as unknown as Record<string, unknown>)[n])]),
      ),
    ];
    for (const out of outputs) {
      expect(out).not.toContain(seedHex);
      expect(out).not.toContain(seedB64.slice(0, 40));
      expect(out).not.toContain(SEED_B64.slice(0, 40));
      expect(out).not.toContain(Array.from(seed.subarray(0, 8)).join(", "));
      expect(out).not.toContain(Array.from(seed.subarray(0, 8)).join(","));
    }
    // The public parts are visible, so the test above would notice if nothing was printed.
    expect(outputs[0]).toContain(PUBLIC);
    expect(outputs[1]).toContain("ed25519:1");
    expect(Object.values(k).some((v) => v instanceof Uint8Array)).toBe(false);
    // The key does not alias the caller's buffer: wiping it later does not change signatures.
    const before = encodeBase64Unpadded(k.sign(new Uint8Array([1])));
    seed.fill(0);
    expect(encodeBase64Unpadded(k.sign(new Uint8Array([1])))).toBe(before);
  });
});

describe("signJson / verifyJsonSignature", () => {
  it("matches the spec vectors", () => {
    expect(signJson<Record<string, unknown>>({}, "domain", key).signatures).toEqual({
      domain: { "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ" },
    });
    expect(signJson({ one: 1, two: "Two" }, "domain", key)).toEqual({
      one: 1,
      two: "Two",
      signatures: {
        domain: {
          "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw",
        },
      },
    });
  });

  it("ignores signatures and unsigned when signing, keeps them in the copy, leaves input alone", () => {
    const input = { one: 1, two: "Two", unsigned: { age: 5 }, signatures: { other: { "ed25519:x": "abc" } } };
    const snapshot = structuredClone(input);
    const out = signJson(input, "domain", key);
    expect(input).toEqual(snapshot);
    expect(out.unsigned).toEqual({ age: 5 });
    expect(out.signatures).toEqual({
      other: { "ed25519:x": "abc" },
      domain: { "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw" },
    });
    expect(verifyJsonSignature(out, "domain", "ed25519:1", PUBLIC)).toBe(true);
  });

  it("adds a second key's signature next to the first", () => {
    const k2 = signingKeyFromSeed(new Uint8Array(32).fill(7), "2");
    const out = signJson<Record<string, unknown>>(signJson({ a: 1 }, "domain", key), "domain", k2);
    expect(Object.keys(out.signatures as object)).toEqual(["domain"]);
    expect(verifyJsonSignature(out, "domain", "ed25519:1", PUBLIC)).toBe(true);
    expect(verifyJsonSignature(out, "domain", "ed25519:2", k2.publicKey)).toBe(true);
  });

  it("accepts a padded public key and padded signature", () => {
    const out = signJson<Record<string, unknown>>({ a: 1 }, "domain", key);
    const sig = (out.signatures as Record<string, Record<string, string>>).domain!["ed25519:1"]!;
    const padded = { ...out, signatures: { domain: { "ed25519:1": `${sig}==` } } };
    expect(verifyJsonSignature(padded, "domain", "ed25519:1", `${PUBLIC}=`)).toBe(true);
  });

  it("returns false, never throws, on anything wrong", () => {
    const good = signJson({ a: 1, unsigned: { x: 1 } }, "domain", key);
    const other = signingKeyFromSeed(new Uint8Array(32).fill(1), "1").publicKey;
    const cases: Array<[unknown, string, string, string]> = [
      [{ ...good, a: 2 }, "domain", "ed25519:1", PUBLIC], // tampered content
      [good, "domain", "ed25519:1", other], // wrong key
      [good, "other", "ed25519:1", PUBLIC], // wrong entity
      [good, "domain", "ed25519:2", PUBLIC], // wrong key id
      [good, "domain", "curve25519:1", PUBLIC], // wrong algorithm
      [good, "domain", "ed25519:1", "not base64!"],
      [good, "domain", "ed25519:1", "AAAA"], // short public key
      [{ ...good, a: 1.5 }, "domain", "ed25519:1", PUBLIC], // not canonical-encodable
      [{ ...good, signatures: { domain: { "ed25519:1": "!!" } } }, "domain", "ed25519:1", PUBLIC],
      [{ ...good, signatures: { domain: { "ed25519:1": "AAAA" } } }, "domain", "ed25519:1", PUBLIC],
      [{ ...good, signatures: { domain: { "ed25519:1": 5 } } }, "domain", "ed25519:1", PUBLIC],
      [{ ...good, signatures: "x" }, "domain", "ed25519:1", PUBLIC],
      [{ a: 1 }, "domain", "ed25519:1", PUBLIC],
      [null, "domain", "ed25519:1", PUBLIC],
      [[good], "domain", "ed25519:1", PUBLIC],
      ["{}", "domain", "ed25519:1", PUBLIC],
    ];
    for (const [obj, entity, keyId, pub] of cases) {
      expect(verifyJsonSignature(obj, entity, keyId, pub)).toBe(false);
    }
    // Changing only `unsigned` keeps the signature valid, as the spec intends.
    expect(verifyJsonSignature({ ...good, unsigned: { y: 2 } }, "domain", "ed25519:1", PUBLIC)).toBe(true);
  });
});

describe("X-Matrix", () => {
  const req = { method: "GET", uri: URI, origin: "domain", destination: "remote.example" };

  it("produces the documented vector header", () => {
    expect(xMatrixAuthorization(req, key)).toBe(
      'X-Matrix origin="domain",destination="remote.example",key="ed25519:1",' +
        'sig="9wvTC3zTan68GPIWEkOOS7OUPXzfd/o+NViLu94SPOW3tRNHC+Y/qcz+67BPZFQn8rmNZdFKrkDgVZ9D91DQAA"',
    );
  });

  it("refuses content on GET, non-path uris and header-breaking names", () => {
    expect(() => xMatrixAuthorization({ ...req, content: {} }, key)).toThrow(/GET/);
    expect(() => xMatrixAuthorization({ ...req, uri: "https://x/_matrix" }, key)).toThrow(/path/);
    expect(() => xMatrixAuthorization({ ...req, origin: 'a",sig="x' }, key)).toThrow(/origin/);
    expect(() => xMatrixAuthorization({ ...req, destination: "" }, key)).toThrow(/destination/);
  });

  it("round-trips through the parser", () => {
    const parsed = parseXMatrixAuthorization(xMatrixAuthorization(req, key));
    expect(parsed).toEqual({
      origin: "domain",
      destination: "remote.example",
      key: "ed25519:1",
      sig: "9wvTC3zTan68GPIWEkOOS7OUPXzfd/o+NViLu94SPOW3tRNHC+Y/qcz+67BPZFQn8rmNZdFKrkDgVZ9D91DQAA",
    });
  });

  it("parses RFC 9110 variants: case, whitespace, unquoted values, escapes, no destination", () => {
    expect(parseXMatrixAuthorization('x-matrix  Origin = "o" , KEY=ed25519:a_b ,sig="s\\"x",extra=1')).toEqual({
      origin: "o",
      key: "ed25519:a_b",
      sig: 's"x',
    });
    expect(parseXMatrixAuthorization('X-Matrix origin=[::1]:8448,key="k",sig=abc+/==,destination="d,e"')).toEqual({
      origin: "[::1]:8448",
      destination: "d,e",
      key: "k",
      sig: "abc+/==",
    });
  });

  it.each([
    ['Bearer origin="o",key="k",sig="s"'],
    ['X-Matrix origin="o",key="k"'], // no sig
    ['X-Matrix origin="",key="k",sig="s"'], // empty origin
    ['X-Matrix key="k",sig="s"'], // no origin
    ['X-Matrix origin="o",origin="p",key="k",sig="s"'], // duplicate
    ['X-Matrix origin="o,key="k",sig="s"'], // unterminated quote
    ['X-Matrix origin="o" key="k",sig="s"'], // missing comma
    ['X-Matrix origin"o",key="k",sig="s"'], // missing "="
    ["X-Matrix"],
    [""],
  ])("rejects %j", (header) => {
    expect(parseXMatrixAuthorization(header)).toBeNull();
  });
});

describe("test helper verifyXMatrixRequest (independent verifier)", () => {
  const keys = { domain: { "ed25519:1": PUBLIC } };
  const get = { method: "GET", uri: URI, origin: "domain", destination: "remote.example" };
  const put = {
    method: "PUT",
    uri: "/_matrix/federation/v1/send/1",
    origin: "domain",
    destination: "remote.example",
    content: { pdus: [], é: 1 },
  };
  const check = (over: Partial<Parameters<typeof verifyXMatrixRequest>[0]>) =>
    verifyXMatrixRequest({
      method: "GET",
      rawTarget: URI,
      authorization: xMatrixAuthorization(get, key),
      expectedDestination: "remote.example",
      keys,
      ...over,
    });

  it("accepts our GET header and our PUT header with its body", () => {
    expect(check({})).toEqual({ ok: true, origin: "domain" });
    const body = JSON.stringify(put.content);
    expect(check({ method: "PUT", rawTarget: put.uri, authorization: xMatrixAuthorization(put, key), body })).toEqual({
      ok: true,
      origin: "domain",
    });
    expect(
      check({
        method: "PUT",
        rawTarget: put.uri,
        authorization: xMatrixAuthorization(put, key),
        body: new TextEncoder().encode(body),
      }),
    ).toEqual({ ok: true, origin: "domain" });
  });

  const header = xMatrixAuthorization(get, key);
  it.each([
    ["no header", { authorization: undefined }, /no Authorization/],
    ["missing sig", { authorization: header.replace(/,sig="[^"]*"/, "") }, /missing sig/],
    ["wrong destination", { expectedDestination: "elsewhere.example" }, /destination/],
    ["unknown origin", { keys: { other: { "ed25519:1": PUBLIC } } }, /unknown key/],
    ["unknown key id", { keys: { domain: { "ed25519:2": PUBLIC } } }, /unknown key/],
    [
      "tampered (decoded) uri",
      { rawTarget: "/_matrix/federation/v1/user/devices/@alice:remote.example" },
      /does not verify/,
    ],
    ["tampered method", { method: "POST" }, /does not verify/],
    ["unexpected body", { body: "{}" }, /does not verify/],
    ["tampered sig", { authorization: header.replace(/sig="./, 'sig="A') }, /does not verify|64 bytes/],
    [
      "other key's pubkey",
      { keys: { domain: { "ed25519:1": signingKeyFromSeed(new Uint8Array(32), "1").publicKey } } },
      /does not verify/,
    ],
  ] as const)("rejects %s", (_name, over, reason) => {
    const res = check(over as Partial<Parameters<typeof verifyXMatrixRequest>[0]>);
    expect(res.ok).toBe(false);
    if (!res.ok) expect(res.reason).toMatch(reason);
  });

  it("rejects a PUT whose body differs from the signed content", () => {
    const res = check({
      method: "PUT",
      rawTarget: put.uri,
      authorization: xMatrixAuthorization(put, key),
      body: '{"pdus":[1]}',
    });
    expect(res).toEqual({ ok: false, reason: "signature does not verify" });
  });
});
