// Unpadded standard base64 (appendices §Unpadded Base64: RFC 4648 §4 alphabet, no "=").
//
// Hand-written rather than Buffer-based so that (a) behaviour is identical on Bun and Deno,
// (b) decoding is strict about the alphabet (Buffer silently skips invalid characters, which
// would let a corrupted key file decode to the wrong seed), and (c) decoded seeds land in a
// fresh Uint8Array, never in Buffer's shared allocation pool.

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

const DECODE = new Int16Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;

/** Standard-alphabet base64 without "=" padding, as Matrix signatures and keys use. */
export function encodeBase64Unpadded(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += ALPHABET[(n >> 18) & 63]! + ALPHABET[(n >> 12) & 63]! + ALPHABET[(n >> 6) & 63]! + ALPHABET[n & 63]!;
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i]! << 16;
    out += ALPHABET[(n >> 18) & 63]! + ALPHABET[(n >> 12) & 63]!;
  } else if (rest === 2) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    out += ALPHABET[(n >> 18) & 63]! + ALPHABET[(n >> 12) & 63]! + ALPHABET[(n >> 6) & 63]!;
  }
  return out;
}

/**
 * Decode standard base64, padded or not (the spec: decoders SHOULD accept both).
 *
 * Non-zero unused trailing bits are tolerated and dropped: the spec's own test seed
 * `YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1` has them, and Python's decoder accepts them.
 * Throws on characters outside the alphabet (including whitespace and the URL-safe `-`/`_`),
 * on a length that no byte string encodes to, and on misplaced or excess padding.
 */
export function decodeBase64(text: string): Uint8Array {
  let end = text.length;
  if (text.endsWith("==")) end -= 2;
  else if (text.endsWith("=")) end -= 1;
  if (end !== text.length && text.length % 4 !== 0) {
    throw new Error("invalid base64: padding does not complete a 4-character group");
  }
  if (end % 4 === 1) throw new Error("invalid base64: length is not a valid encoded length");

  const out = new Uint8Array(Math.floor((end * 3) / 4));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (let i = 0; i < end; i++) {
    const c = text.charCodeAt(i);
    const v = c < 128 ? DECODE[c]! : -1;
    if (v < 0) throw new Error(`invalid base64: unexpected character at offset ${i}`);
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  // Remaining `bits` (2 or 4) are padding bits: ignored even when non-zero, see above.
  return out;
}
