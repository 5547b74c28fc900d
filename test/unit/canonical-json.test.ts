import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { Buffer } from "node:buffer";
import { CanonicalJsonError, canonicalJson, compareCodePoints } from "../../src/federation/canonical-json.ts";
import { decodeBase64, encodeBase64Unpadded } from "../../src/federation/base64.ts";

describe("canonicalJson: spec examples (appendices §Canonical JSON)", () => {
  const cases: Array<[string, string]> = [
    ["{}", "{}"],
    ['{\n    "one": 1,\n    "two": "Two"\n}', '{"one":1,"two":"Two"}'],
    ['{\n    "b": "2",\n    "a": "1"\n}', '{"a":"1","b":"2"}'],
    ['{"b":"2","a":"1"}', '{"a":"1","b":"2"}'],
    [
      '{"auth":{"success":true,"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"medium":"email","address":"john.doe@example.org"},{"medium":"msisdn","address":"123456789"}]}}}',
      '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ],
    ['{"a": "日本語"}', '{"a":"日本語"}'],
    ['{"本": 2, "日": 1}', '{"日":1,"本":2}'],
    ['{"a": "\\u65E5"}', '{"a":"日"}'],
    ['{"a": null}', '{"a":null}'],
  ];
  for (const [input, expected] of cases) {
    it(`encodes ${input.replace(/\s+/g, " ").slice(0, 40)}`, () => {
      expect(canonicalJson(JSON.parse(input))).toBe(expected);
    });
  }
});

describe("canonicalJson: strings", () => {
  it("uses the short escapes and lowercase \\u00XX for other C0 controls only", () => {
    const all = Array.from({ length: 0x20 }, (_, i) => String.fromCharCode(i)).join("");
    expect(canonicalJson(all)).toBe(
      '"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f' +
        '\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f"',
    );
    expect(canonicalJson('"\\/')).toBe('"\\"\\\\/"');
  });

  it("emits DEL, U+2028/2029, BMP and astral characters literally", () => {
    const s = "\x7f\u2028\u2029é日\u{1F600}\uFFFD";
    expect(canonicalJson(s)).toBe(`"${s}"`);
    expect(canonicalJson({ k: s })).toBe(`{"k":"${s}"}`);
  });

  it("rejects lone surrogates in values and keys but accepts pairs", () => {
    expect(() => canonicalJson("a\uD83Db")).toThrow(CanonicalJsonError);
    expect(() => canonicalJson("\uDE00")).toThrow(CanonicalJsonError);
    expect(() => canonicalJson({ ["x\uD800"]: 1 })).toThrow(CanonicalJsonError);
    expect(canonicalJson("\uD83D\uDE00")).toBe('"😀"');
  });
});

describe("canonicalJson: key order by code point", () => {
  it("sorts astral keys after U+E000–U+FFFF keys (UTF-16 order would not)", () => {
    const obj = { "\u{1F600}": 1, "\uFFFD": 2, "\uE000": 3, z: 4, "\u00e9": 5 };
    // Default JS sort puts the surrogate pair (0xD83D…) before U+E000.
    expect(Object.keys(obj).sort()[2]).toBe("\u{1F600}");
    expect(canonicalJson(obj)).toBe('{"z":4,"é":5,"\uE000":3,"\uFFFD":2,"😀":1}');
  });

  it("sorts a prefix before its extensions and by code point otherwise", () => {
    expect(canonicalJson({ ab: 1, a: 2, B: 3, "": 4 })).toBe('{"":4,"B":3,"a":2,"ab":1}');
  });

  it("agrees with UTF-8 byte order for arbitrary well-formed strings (property)", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary" }), fc.string({ unit: "binary" }), (a, b) => {
        const bytes = Math.sign(Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8")));
        expect(Math.sign(compareCodePoints(a, b))).toBe(bytes);
      }),
      { numRuns: 2000 },
    );
  });
});

describe("canonicalJson: numbers and other values", () => {
  it("accepts integers at the edges of the safe range", () => {
    expect(canonicalJson([0, -1, 2 ** 53 - 1, -(2 ** 53) + 1, 1e15])).toBe(
      "[0,-1,9007199254740991,-9007199254740991,1000000000000000]",
    );
  });

  it.each([
    ["a float", 1.5],
    ["2^53", 2 ** 53],
    ["1e20 (exponent territory)", 1e20],
    ["-(2^53)", -(2 ** 53)],
    ["-0", -0],
    ["NaN", Number.NaN],
    ["Infinity", Number.POSITIVE_INFINITY],
    ["undefined", undefined],
    ["a bigint", 1n],
    ["a function", () => 1],
    ["a symbol", Symbol("x")],
    ["a Date", new Date(0)],
    ["a Map", new Map()],
    ["a Uint8Array", new Uint8Array(1)],
  ])("rejects %s, also nested", (_name, value) => {
    expect(() => canonicalJson(value)).toThrow(CanonicalJsonError);
    expect(() => canonicalJson({ a: { b: [1, value] } })).toThrow(CanonicalJsonError);
  });

  it("names the offending path", () => {
    expect(() => canonicalJson({ a: { b: [1, 0.5] } })).toThrow(/\$\.a\.b\[1\]/);
  });

  it("rejects an undefined property instead of dropping it like JSON.stringify", () => {
    expect(() => canonicalJson({ a: 1, b: undefined })).toThrow(CanonicalJsonError);
  });

  it("rejects array holes and cycles", () => {
    // eslint-disable-next-line no-sparse-arrays
    // biome-ignore lint/suspicious/noSparseArray: a hole is the input under test
    expect(() => canonicalJson([1, , 3])).toThrow(CanonicalJsonError);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => canonicalJson(cyclic)).toThrow(/cyclic/);
  });

  it("allows the same object twice when it is not a cycle", () => {
    const shared = { x: 1 };
    expect(canonicalJson({ a: shared, b: [shared] })).toBe('{"a":{"x":1},"b":[{"x":1}]}');
  });

  it("keeps a literal __proto__ key as data", () => {
    expect(canonicalJson(JSON.parse('{"b":2,"__proto__":{"x":1}}'))).toBe('{"__proto__":{"x":1},"b":2}');
  });

  it("accepts null-prototype objects and encodes booleans and null", () => {
    const o = Object.assign(Object.create(null) as Record<string, unknown>, { t: true, f: false, n: null });
    expect(canonicalJson(o)).toBe('{"f":false,"n":null,"t":true}');
  });

  it("round-trips through JSON.parse and is a fixed point (property)", () => {
    const json = fc.letrec((tie) => ({
      value: fc.oneof(
        { depthSize: "small" },
        fc.constant(null),
        fc.boolean(),
        fc.maxSafeInteger().filter((n) => !Object.is(n, -0)),
        fc.string({ unit: "binary" }),
        fc.array(tie("value"), { maxLength: 4 }),
        fc.dictionary(fc.string({ unit: "binary" }), tie("value"), { maxKeys: 4 }),
      ),
    })).value;
    fc.assert(
      fc.property(json, (v) => {
        const out = canonicalJson(v);
        // toEqual, not toStrictEqual: fast-check also makes null-prototype dictionaries.
        expect(JSON.parse(out)).toEqual(v);
        expect(canonicalJson(JSON.parse(out))).toBe(out);
        expect(out).not.toMatch(/[\n ]:|,\s/);
      }),
      { numRuns: 500 },
    );
  });
});

describe("base64", () => {
  it("encodes the spec's unpadded examples", () => {
    const enc = (s: string): string => encodeBase64Unpadded(new TextEncoder().encode(s));
    expect(["", "f", "fo", "foo", "foob", "fooba", "foobar"].map(enc)).toEqual([
      "",
      "Zg",
      "Zm8",
      "Zm9v",
      "Zm9vYg",
      "Zm9vYmE",
      "Zm9vYmFy",
    ]);
  });

  it("decodes with or without padding", () => {
    const dec = (s: string): string => new TextDecoder().decode(decodeBase64(s));
    expect(dec("Zm9vYg")).toBe("foob");
    expect(dec("Zm9vYg==")).toBe("foob");
    expect(dec("Zm9vYmE=")).toBe("fooba");
    expect(dec("")).toBe("");
  });

  it("tolerates non-zero trailing bits (the spec's test seed has them)", () => {
    expect(decodeBase64("Zh")).toEqual(decodeBase64("Zg"));
    const seed = decodeBase64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1");
    expect(seed.length).toBe(32);
    expect(encodeBase64Unpadded(seed)).toBe("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0");
  });

  it.each(["Zm9v!", "Zm9 v", "Zm9v\n", "Zm-_", "Z", "Zm9vY", "Zg=", "Zg===", "=", "Z=g=", "Zm9vYg==" + "="])(
    "rejects %j",
    (bad) => {
      expect(() => decodeBase64(bad)).toThrow(/invalid base64/);
    },
  );

  it("round-trips random bytes and matches Buffer's encoder (property)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), (bytes) => {
        const text = encodeBase64Unpadded(bytes);
        expect(text).toBe(Buffer.from(bytes).toString("base64").replace(/=+$/, ""));
        expect(decodeBase64(text)).toEqual(bytes);
      }),
    );
  });
});
