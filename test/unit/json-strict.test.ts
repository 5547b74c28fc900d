// The strict parser that tests use as their JSON oracle (test/helpers/json-strict.ts) must read
// what JSON.parse reads and refuse what RFC 8259 refuses. Fixed seed: the run is the same on
// every engine, so an engine's own JSON.parse fault (see the helper) cannot make it flaky.
import fc from "fast-check";
import { expect, test } from "vitest";
import { strictParse } from "../helpers/json-strict.ts";

test("reads any JSON text as JSON.parse does", () => {
  fc.assert(
    fc.property(fc.jsonValue(), fc.constantFrom(undefined, 2), (v, indent) => {
      const text = JSON.stringify(v, null, indent);
      expect(strictParse(text)).toEqual(JSON.parse(text));
    }),
    { seed: 20261207, numRuns: 400 },
  );
  expect(strictParse('{"__proto__": 1, "a": 1, "a": [2, {"b": "\\u00e9\\"\\\\\\/"}]}')).toEqual(
    JSON.parse('{"__proto__": 1, "a": 1, "a": [2, {"b": "\\u00e9\\"\\\\\\/"}]}'),
  );
});

test("refuses what RFC 8259 refuses", () => {
  for (const bad of ['"a\tb"', '"\\x"', "[1,]", "01", "{'a': 1}", '{"a" 1}', "1 2", "", "nul", '"\\u12"', "-", "1."])
    expect(() => strictParse(bad), bad).toThrow(SyntaxError);
});
