// The grammar between strings for json-capture.ts: RFC 8259 as one lookup table, so its scan
// takes one table read per byte instead of a chain of comparisons.

export const QUOTE = 0x22,
  BACKSLASH = 0x5c,
  OPEN_OBJ = 0x7b,
  CLOSE_OBJ = 0x7d,
  COMMA = 0x2c,
  COLON = 0x3a;
// Grammar states outside strings (RFC 8259 §2, §4, §5), then number states (§6: MINUS, DOT,
// EXP_MARK and EXP_SIGN still need a digit), then literal states (§3); LIT_DONE has read one.
export const START = 0,
  OBJ_FIRST = 1,
  OBJ_KEY = 2,
  AFTER_KEY = 3,
  VALUE = 4,
  ARR_FIRST = 5,
  AFTER_VALUE = 6,
  END = 7;
export const MINUS = 8,
  ZERO = 9,
  INT = 10,
  DOT = 11,
  FRAC = 12,
  EXP_MARK = 13,
  EXP_SIGN = 14,
  EXP = 15,
  LIT_DONE = 16,
  ERROR = 31;
// What a byte does besides moving to the state in the low 5 bits.
export const STRING = 32,
  PUSH = 64,
  POP = 128,
  NEXT = 256,
  SCALAR_END = 512,
  VALUE_START = 1024;

// One table lookup per byte between strings: TABLE[state << 8 | byte] is the next state, plus
// action bits. Most bytes (whitespace, `:`, digits, literal letters) need no action, so the scan
// takes one branch for them instead of a chain of comparisons. Anything not listed is ERROR.
export const TABLE = new Uint16Array(32 << 8).fill(ERROR);
const on = (states: number[], bytes: string, next: number) => {
  for (const s of states) for (let k = 0; k < bytes.length; k++) TABLE[(s << 8) | bytes.charCodeAt(k)] = next;
};
const WS = " \t\n\r",
  DIGITS = "0123456789",
  ACCEPTING = [ZERO, INT, FRAC, EXP, LIT_DONE];
for (const s of [START, OBJ_FIRST, OBJ_KEY, AFTER_KEY, VALUE, ARR_FIRST, AFTER_VALUE, END]) on([s], WS, s);
on([START], "{", OBJ_FIRST | PUSH);
on([OBJ_FIRST, OBJ_KEY], '"', AFTER_KEY | STRING);
on([OBJ_FIRST], "}", POP);
on([AFTER_KEY], ":", VALUE);
on([ARR_FIRST], "]", POP);
on([VALUE, ARR_FIRST], '"', AFTER_VALUE | STRING | VALUE_START);
on([VALUE, ARR_FIRST], "{", OBJ_FIRST | PUSH | VALUE_START);
on([VALUE, ARR_FIRST], "[", ARR_FIRST | PUSH | VALUE_START);
on([VALUE, ARR_FIRST], "-", MINUS | VALUE_START);
on([VALUE, ARR_FIRST], "0", ZERO | VALUE_START);
on([VALUE, ARR_FIRST], "123456789", INT | VALUE_START);
on([AFTER_VALUE], ",", NEXT);
on([AFTER_VALUE], "}]", POP);
on(ACCEPTING, WS, AFTER_VALUE | SCALAR_END);
on(ACCEPTING, ",", NEXT | SCALAR_END);
on(ACCEPTING, "}]", POP | SCALAR_END);
on([MINUS], "0", ZERO);
on([MINUS, INT], "123456789", INT);
on([INT], "0", INT);
on([ZERO, INT], ".", DOT);
on([DOT, FRAC], DIGITS, FRAC);
on([ZERO, INT, FRAC], "eE", EXP_MARK);
on([EXP_MARK], "+-", EXP_SIGN);
on([EXP_MARK, EXP_SIGN, EXP], DIGITS, EXP);
let litState = LIT_DONE + 1;
for (const word of ["true", "false", "null"]) {
  let s = litState++;
  on([VALUE, ARR_FIRST], word[0]!, s | VALUE_START);
  for (let k = 1; k < word.length; k++) {
    const next = k === word.length - 1 ? LIT_DONE : litState++;
    on([s], word[k]!, next);
    s = next;
  }
}
