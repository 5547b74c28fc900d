// Which start-up errors refuse to start (no wait cures them) and which are an outage the replica
// serves through (commands/pg-start.ts; docs/scaling.md, "When something fails").
import { expect, test } from "vitest";
import { refusal } from "../../src/commands/pg-start.ts";
import { NewerSchema } from "../../src/store/pg-migrations.ts";
import { checkUrl, InvalidDatabaseUrl } from "../../src/store/postgres.ts";

const wrapped = (code: string, msg = "from the server") =>
  new Error(`store: postgres://x@db/y is not usable: ${msg}`, { cause: Object.assign(new Error(msg), { code }) });

test.each([
  ["28P01", /password/],
  ["28000", /role/],
  ["3D000", /database does not exist/],
  ["42501", /privilege/],
])("SQLSTATE %s refuses", (code, why) => {
  expect(refusal(wrapped(code))).toMatch(why);
  expect(refusal(Object.assign(new Error("raw, as the cluster's open throws it"), { code }))).toMatch(why);
});

test("a newer schema and an unusable URL refuse", () => {
  expect(refusal(new Error("x", { cause: new NewerSchema("store schema version 9 is newer") }))).toMatch(/newer build/);
  expect(refusal(new InvalidDatabaseUrl("bad port"))).toMatch(/URL/);
});

test.each(["ECONNREFUSED", "CONNECT_TIMEOUT", "ENOTFOUND", "EAI_AGAIN", "57P03", "53300", "CONNECTION_CLOSED"])(
  "%s is an outage: served through, tried again",
  (code) => {
    expect(refusal(wrapped(code))).toBeUndefined();
  },
);

test("an error with no code is an outage", () => {
  expect(refusal(new Error("socket hang up"))).toBeUndefined();
  expect(refusal("a string")).toBeUndefined();
});

// The client only finds a bad port when it connects, as it would an outage; the URL is checked first.
test.each([
  "postgres://u:p@127.0.0.1:5432/db",
  "postgresql://localhost/db",
  "postgres://u@h1:5432,h2:5433/db",
  "postgres://u@/db?host=/var/run/postgresql",
  "postgres://[::1]:5432/db",
])("the URL %s is taken", (url) => {
  expect(() => checkUrl(url)).not.toThrow();
});

test.each(["postgres://127.0.0.1:99999/db", "postgres://h1:5432,h2:0/db", "postgres://h:port/db", "mysql://h/db"])(
  "the URL %s is refused",
  (url) => {
    expect(() => checkUrl(url)).toThrow();
  },
);
