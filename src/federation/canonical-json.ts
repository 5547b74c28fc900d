// Canonical JSON, as the Matrix spec defines it (appendices §Canonical JSON).
//
// Every signature in federation (X-Matrix request auth, server key documents, device keys,
// cross-signing keys) is computed over these exact bytes, so one stray difference from what
// Synapse's `canonicaljson` emits makes every signature fail. The rules:
//   - no insignificant whitespace;
//   - object keys sorted by Unicode code point (equivalently: by their UTF-8 bytes);
//   - non-ASCII characters emitted literally (the caller UTF-8-encodes the result);
//   - only `\" \\ \b \f \n \r \t` short escapes, other C0 controls as lowercase `\u00XX`;
//   - numbers: integers in [-(2^53)+1, 2^53-1] only; no fractions, exponents or -0.
//
// Decisions beyond the spec text, all "reject rather than guess":
//   - Lone surrogates (in keys or values) are rejected: they cannot be encoded as UTF-8, and
//     Python's canonicaljson fails on them too (UnicodeEncodeError), so no peer could verify.
//   - `undefined` anywhere (including as an object property value, which JSON.stringify would
//     silently drop), functions, symbols, bigints, and non-plain objects (Date, Map, typed
//     arrays, class instances) are rejected: silently dropping or converting them would sign
//     something other than what the caller believes it signs.
//   - Cycles are rejected instead of overflowing the stack.

export class CanonicalJsonError extends Error {
  override name = "CanonicalJsonError";
}

// In a regex with the `u` flag, a surrogate class only matches UNPAIRED surrogates: a valid
// pair is read as one astral code point and does not match.
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/** Encode `value` as Matrix canonical JSON. Throws CanonicalJsonError on anything not allowed. */
export function canonicalJson(value: unknown): string {
  return encode(value, "$", new Set<object>());
}

function encode(value: unknown, path: string, seen: Set<object>): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "string":
      return encodeString(value, path);
    case "number":
      return encodeNumber(value, path);
    case "object":
      return encodeContainer(value, path, seen);
    default:
      // undefined, function, symbol, bigint
      throw new CanonicalJsonError(`${path}: ${typeof value} is not representable in canonical JSON`);
  }
}

function encodeNumber(n: number, path: string): string {
  // Spec: "integers in the range [-(2**53)+1, (2**53)-1]"; floats and -0 are not canonical.
  if (!Number.isSafeInteger(n)) {
    throw new CanonicalJsonError(`${path}: ${String(n)} is not an integer in [-(2^53)+1, 2^53-1]`);
  }
  if (Object.is(n, -0)) throw new CanonicalJsonError(`${path}: -0 is not allowed`);
  // String() of a safe integer is plain decimal digits: no exponent below 1e21.
  return String(n);
}

function encodeString(s: string, path: string): string {
  if (LONE_SURROGATE.test(s)) {
    throw new CanonicalJsonError(`${path}: string contains an unpaired UTF-16 surrogate`);
  }
  // For well-formed strings JSON.stringify matches the canonical escaping exactly: it escapes
  // only `"`, `\`, \b \f \n \r \t and other U+0000–U+001F as lowercase \u00XX, and leaves
  // everything else (DEL, U+2028/2029, astral characters) literal — as Python's
  // json.dumps(ensure_ascii=False) does. Unit tests pin each of these cases.
  return JSON.stringify(s);
}

function encodeContainer(value: object, path: string, seen: Set<object>): string {
  if (seen.has(value)) throw new CanonicalJsonError(`${path}: cyclic structure`);
  seen.add(value);
  try {
    if (Array.isArray(value)) return encodeArray(value, path, seen);
    const proto: unknown = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) {
      const name = (value as { constructor?: { name?: string } }).constructor?.name ?? "object";
      throw new CanonicalJsonError(`${path}: ${name} is not a plain object`);
    }
    return encodeObject(value as Record<string, unknown>, path, seen);
  } finally {
    seen.delete(value);
  }
}

function encodeArray(arr: readonly unknown[], path: string, seen: Set<object>): string {
  const parts: string[] = [];
  // Index loop, not map(): map() skips holes, which would then vanish from the output.
  for (let i = 0; i < arr.length; i++) parts.push(encode(arr[i], `${path}[${i}]`, seen));
  return `[${parts.join(",")}]`;
}

function encodeObject(obj: Record<string, unknown>, path: string, seen: Set<object>): string {
  const keys = Object.keys(obj).sort(compareCodePoints);
  const parts: string[] = [];
  for (const key of keys) {
    const childPath = `${path}.${key}`;
    parts.push(`${encodeString(key, childPath)}:${encode(obj[key], childPath, seen)}`);
  }
  return `{${parts.join(",")}}`;
}

/**
 * Compare two well-formed strings by Unicode code point.
 *
 * JS `<` compares UTF-16 code units, which agrees with code point order except when a
 * surrogate (U+D800–U+DFFF, i.e. part of an astral character U+10000+) meets a BMP unit in
 * U+E000–U+FFFF: by units the surrogate sorts first, by code points it sorts last. Rotating
 * that range (E000–FFFF down by 0x800, surrogates up by 0x2000) fixes exactly that case.
 */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return rotate(x) - rotate(y);
  }
  return a.length - b.length;
}

function rotate(unit: number): number {
  if (unit >= 0xe000) return unit - 0x800;
  if (unit >= 0xd800) return unit + 0x2000;
  return unit;
}
