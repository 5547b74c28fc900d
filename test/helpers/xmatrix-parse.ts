// The X-Matrix header parser (server-server-api §Request Authentication), used by the tests
// to read back what src/federation/signing.ts writes: the proxy only ever sends the header,
// so the parser is test code.

export interface XMatrixParams {
  origin: string;
  destination?: string;
  key: string;
  sig: string;
}

/**
 * Parse an `Authorization: X-Matrix …` header. Follows RFC 9110 §11 auth-param syntax
 * (scheme and parameter names case-insensitive, values token or quoted-string, optional
 * whitespace around commas and "="), which the spec adopted in v1.3. `destination` is
 * optional because servers before v1.3 did not send it. Returns null on anything malformed,
 * on duplicate parameters, and when origin, key or sig is missing or empty.
 */
export function parseXMatrixAuthorization(header: string): XMatrixParams | null {
  const m = /^\s*x-matrix\s+/i.exec(header);
  if (!m) return null;
  const params = new Map<string, string>();
  let i = m[0].length;
  const s = header;
  const skipWs = (): void => {
    while (i < s.length && (s[i] === " " || s[i] === "\t")) i++;
  };
  for (;;) {
    skipWs();
    const nameMatch = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/.exec(s.slice(i));
    if (!nameMatch) return null;
    const name = nameMatch[0].toLowerCase();
    i += nameMatch[0].length;
    skipWs();
    if (s[i] !== "=") return null;
    i++;
    skipWs();
    let value = "";
    if (s[i] === '"') {
      i++;
      for (;;) {
        if (i >= s.length) return null; // unterminated quoted-string
        const c = s[i++]!;
        if (c === '"') break;
        if (c === "\\") {
          if (i >= s.length) return null;
          value += s[i++]!;
        } else value += c;
      }
    } else {
      const tok = /^[!#$%&'*+.^_`|~0-9A-Za-z:\/=\[\]-]+/.exec(s.slice(i));
      if (!tok) return null;
      value = tok[0];
      i += tok[0].length;
    }
    if (params.has(name)) return null;
    params.set(name, value);
    skipWs();
    if (i >= s.length) break;
    if (s[i] !== ",") return null;
    i++;
  }
  const origin = params.get("origin");
  const key = params.get("key");
  const sig = params.get("sig");
  if (!origin || !key || !sig) return null;
  const destination = params.get("destination");
  return destination === undefined ? { origin, key, sig } : { origin, destination, key, sig };
}
