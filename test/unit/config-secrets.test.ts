// A secret given in the configuration never comes back out of it: not in the one-line error
// for a bad value, not in the upstream URL the rest of the proxy logs and prints.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { ConfigError, parseCli } from "../../src/config/config.ts";

const SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
const errorOf = (argv: string[], env: Record<string, string> = {}) => {
  try {
    parseCli(argv, env);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error("expected a ConfigError");
};
const configOf = (argv: string[]) => {
  const a = parseCli(argv, {});
  if (a.kind !== "run") throw new Error(a.kind);
  return a.config;
};

describe("secret options are never echoed", () => {
  test("a signingKeySeed of the wrong type in a config file: the error names the key and the type, not the value", () => {
    const dir = mkdtempSync(join(tmpdir(), "cfg-secret-"));
    const file = join(dir, "c.yaml");
    // A YAML list (a seed pasted with a leading "- ") and a mapping: both the wrong type.
    writeFileSync(
      file,
      `upstream: http://127.0.0.1:8008\nserverName: a.org\nsigningKeyId: ed25519:a\nsigningKeySeed:\n  - ${SEED}\n`,
    );
    const list = errorOf(["--config", file]);
    expect(list).toMatch(
      /^key 'signingKeySeed' in .*c\.yaml: expected an unpadded base64 32-byte ed25519 seed, got an array/,
    );
    expect(list).not.toContain(SEED);
    writeFileSync(
      file,
      `upstream: http://127.0.0.1:8008\nserverName: a.org\nsigningKeyId: ed25519:a\nsigningKeySeed: { seed: ${SEED} }\n`,
    );
    const map = errorOf(["--config", file]);
    expect(map).toMatch(/got an object/);
    expect(map).not.toContain(SEED);
  });

  test("an empty seed from env is not echoed either (nor is any seed text)", () => {
    const msg = errorOf([
      "--upstream",
      "http://x",
      "--server-name",
      "a",
      "--signing-key-id",
      "ed25519:a",
      "--signing-key-seed",
      " \t",
    ]);
    expect(msg).toMatch(/^--signing-key-seed: expected .*, got a string \(value not shown: secret\)/);
  });

  test("a non-secret option still shows what it got", () => {
    expect(
      errorOf(["--upstream", "http://x", "--server-name", "a", "--signing-key", "/k", "--refresh-wait-ms", "abc"]),
    ).toMatch(/got "abc"/);
  });
});

describe("--upstream with a user and password", () => {
  test("the userinfo is dropped from the URL the proxy keeps (it never sent it: see docs/deployment.md)", () => {
    const c = configOf([
      "--upstream",
      "http://admin:hunter2secret@127.0.0.1:8008/base",
      "--server-name",
      "a",
      "--signing-key",
      "/k",
    ]);
    expect(c.upstream).toBe("http://127.0.0.1:8008/base");
    expect(
      configOf(["--upstream", "https://only-user@hs.example:8448", "--server-name", "a", "--signing-key", "/k"])
        .upstream,
    ).toBe("https://hs.example:8448/");
  });

  test("an invalid upstream URL with a password is reported without the password", () => {
    const msg = errorOf([
      "--upstream",
      "ftp://admin:hunter2secret@hs.example",
      "--server-name",
      "a",
      "--signing-key",
      "/k",
    ]);
    expect(msg).toMatch(/^--upstream: expected an http\(s\) URL/);
    expect(msg).not.toContain("hunter2secret");
  });
});
