// A strict RFC 8259 JSON parser, the oracle for tests that feed scanners mutated documents.
// JSON.parse cannot be that oracle under Deno: V8 15.0 (Deno 2.9.6) was seen, after a few
// hundred documents, to accept a string holding a raw tab and to read the key `"\""` as `\`,
// so a test would blame the scanner for the engine. Values are built as JSON.parse builds them
// (the last of duplicate keys wins; "__proto__" is an own property).

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

export function strictParse(text: string): unknown {
  let i = 0;
  const fail = (what: string): never => {
    throw new SyntaxError(`${what} at ${i}`);
  };
  const ws = () => {
    while (i < text.length && " \t\n\r".includes(text[i]!)) i++;
  };
  const string = (): string => {
    if (text[i] !== '"') fail("expected a string");
    let out = "";
    for (i++; ; ) {
      if (i >= text.length) fail("unterminated string");
      const c = text.charCodeAt(i);
      if (c === 0x22) return (i++, out);
      if (c < 0x20) fail("a raw control character in a string");
      if (c !== 0x5c) {
        out += text[i++];
        continue;
      }
      const e = text[i + 1];
      const simple: Record<string, string> = {
        '"': '"',
        "\\": "\\",
        "/": "/",
        b: "\b",
        f: "\f",
        n: "\n",
        r: "\r",
        t: "\t",
      };
      if (e !== undefined && e in simple) {
        out += simple[e];
        i += 2;
      } else if (e === "u" && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
        out += String.fromCharCode(Number.parseInt(text.slice(i + 2, i + 6), 16));
        i += 6;
      } else fail("a bad escape");
    }
  };
  const value = (): unknown => {
    ws();
    const c = text[i];
    if (c === "{") {
      const o: Record<string, unknown> = {};
      i++;
      ws();
      if (text[i] === "}") return (i++, o);
      for (;;) {
        ws();
        const k = string();
        ws();
        if (text[i++] !== ":") fail("expected ':'");
        Object.defineProperty(o, k, { value: value(), enumerable: true, writable: true, configurable: true });
        ws();
        const d = text[i++];
        if (d === "}") return o;
        if (d !== ",") fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      const a: unknown[] = [];
      i++;
      ws();
      if (text[i] === "]") return (i++, a);
      for (;;) {
        a.push(value());
        ws();
        const d = text[i++];
        if (d === "]") return a;
        if (d !== ",") fail("expected ',' or ']'");
      }
    }
    if (c === '"') return string();
    for (const [word, v] of [
      ["true", true],
      ["false", false],
      ["null", null],
    ] as const)
      if (text.startsWith(word, i)) return ((i += word.length), v);
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (!m) fail("expected a value");
    i += m![0].length;
    return Number(m![0]);
  };
  const v = value();
  ws();
  if (i !== text.length) fail("trailing text");
  return v;
}
