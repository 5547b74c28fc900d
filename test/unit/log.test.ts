import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { createLogger, redact } from "../../src/observe/log.ts";
import { CLIENT_CLOSED, levelFor, routeClass } from "../../src/http/request-log.ts";

function capture(level: "debug" | "info" | "warn" | "error" = "debug") {
  const lines: string[] = [];
  return { log: createLogger(level, (l) => void lines.push(l)), lines, text: () => lines.join("") };
}

// Realistic secrets: a Synapse access token, an X-Matrix signature, a Synapse key-file seed.
const TOKEN = "syt_YWxpY2U_KLmnOPqrSTuvWXyzABCD_0a1b2c";
const SIG = "dGhpcyBpcyBhIHNpZ25hdHVyZSBvZiBzaXh0eSBmb3VyIGJ5dGVzIGxvbmcgYWFhYWFhYWFhYWFhYWFhYWFh";
const SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
const PEM =
  "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGDBg0PXnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW\n-----END PRIVATE KEY-----";

describe("createLogger", () => {
  test("writes one JSON object per line with time, level, msg and the fields", () => {
    const c = capture("debug");
    c.log.info("hello", { a: 1, nested: { b: "c" } });
    expect(c.lines).toHaveLength(1);
    expect(c.lines[0]!.endsWith("\n")).toBe(true);
    const o = JSON.parse(c.lines[0]!);
    expect(o).toMatchObject({ level: "info", msg: "hello", a: 1, nested: { b: "c" } });
    expect(Number.isNaN(Date.parse(o.time))).toBe(false);
  });

  test("drops lines below the configured level", () => {
    const c = capture("warn");
    c.log.debug("d");
    c.log.info("i");
    c.log.warn("w");
    c.log.error("e");
    expect(c.lines.map((l) => JSON.parse(l).level)).toEqual(["warn", "error"]);
  });

  test("a field that cannot be serialised does not throw", () => {
    const c = capture();
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    expect(() => c.log.info("x", { cyclic, big: 10n })).not.toThrow();
    expect(JSON.parse(c.lines[0]!).big).toBe("10");
  });
});

describe("redaction: secrets never reach a line", () => {
  test.each<[string, Record<string, unknown>, string[]]>([
    ["Authorization header field", { headers: { authorization: `Bearer ${TOKEN}`, host: "hs.test" } }, [TOKEN]],
    [
      "access_token in a logged URL",
      { target: `/_matrix/client/v3/sync?since=s1&access_token=${TOKEN}&timeout=30000` },
      [TOKEN],
    ],
    ["Bearer inside an error message", { error: new Error(`upstream said no to Bearer ${TOKEN}`) }, [TOKEN]],
    [
      "a login body logged as text",
      { body: `{"user_id":"@a:hs.test","access_token":"${TOKEN}","refresh_token":"${TOKEN}x"}` },
      [TOKEN],
    ],
    [
      "token and accessToken fields",
      { who: { userId: "@a:hs.test", deviceId: "D", token: TOKEN }, accessToken: TOKEN },
      [TOKEN],
    ],
    [
      "X-Matrix header, quoted sig",
      { auth: `X-Matrix origin="hs.test",destination="r.test",key="ed25519:1",sig="${SIG}"` },
      [SIG],
    ],
    ["X-Matrix header, unquoted sig", { auth: `X-Matrix origin=hs.test,key="ed25519:1",sig=${SIG}` }, [SIG]],
    [
      "device keys with signatures",
      { keys: { user_id: "@b:r.test", signatures: { "@b:r.test": { "ed25519:DEV": SIG } } } },
      [SIG],
    ],
    ["a signature field", { signature: SIG, sig: SIG }, [SIG]],
    ["Synapse key-file line in an error", { error: `cannot parse key file: "ed25519 a_AbCd ${SEED}"` }, [SEED]],
    ["a seed field (Conduit)", { signingKeySeed: SEED, signing_key_seed: SEED, seed: SEED }, [SEED]],
    [
      "a PEM private key (Dendrite)",
      { file: `read ${PEM} from disk` },
      ["MC4CAQAwBQYDK2VwBCIEIGDBg0PXnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW"],
    ],
    ["raw bytes", { body: Buffer.from(TOKEN) }, [TOKEN, Buffer.from(TOKEN).toString("base64")]],
  ])("%s", (_name, fields, secrets) => {
    const c = capture();
    c.log.warn(`msg mentions Bearer ${TOKEN}`, fields);
    for (const s of secrets) expect(c.text()).not.toContain(s);
    expect(c.text()).not.toContain(TOKEN);
    expect(c.text()).toContain("<redacted>");
  });

  test("context around the secrets survives", () => {
    const out = redact({
      target: `/_matrix/client/v3/sync?since=s1&access_token=${TOKEN}&timeout=30000`,
      userId: "@a:hs.test",
      keyId: "ed25519:1",
    }) as Record<string, string>;
    expect(out.target).toBe("/_matrix/client/v3/sync?since=s1&access_token=<redacted>&timeout=30000");
    expect(out.userId).toBe("@a:hs.test");
    expect(out.keyId).toBe("ed25519:1");
  });

  test("any token, in any of the places a token travels, is masked", () => {
    const tokenArb = fc.stringMatching(/^[A-Za-z0-9_.~+/-]{12,60}$/);
    fc.assert(
      fc.property(tokenArb, fc.integer({ min: 0, max: 5 }), (tok, where) => {
        const carriers = [
          { authorization: `Bearer ${tok}` },
          { target: `/x?a=1&access_token=${tok}` },
          { error: `GET /x?access_token=${tok} failed` },
          { body: `{"access_token": "${tok}"}` },
          { header: `X-Matrix origin=a,key="ed25519:1",sig="${tok}"` },
          { nested: [{ deep: { access_token: tok } }] },
        ];
        const c = capture();
        c.log.error("x", carriers[where]!);
        return !c.text().includes(tok);
      }),
      { numRuns: 300 },
    );
  });
});

describe("request log classes and levels", () => {
  test.each([
    ["POST", "/_matrix/client/v3/user/%40b%3Ar.test/devices/refresh", "refresh"],
    ["POST", "/_matrix/client/r0/user/%40b%3Ar.test/devices/refresh/", "refresh"],
    ["POST", "/_matrix/client/unstable/org.matrix.msc2638/user/%40b%3Ar.test/devices/refresh", "refresh"],
    ["GET", "/_matrix/unstable/org.matrix.msc2638/user/%40b%3Ar.test/devices", "refresh"],
    ["OPTIONS", "/_matrix/client/v3/user/%40b%3Ar.test/devices/refresh", "refresh"],
    ["GET", "/_matrix/client/v3/user/%40b%3Ar.test/devices/refresh", "passthrough"],
    ["GET", "/_matrix/client/v3/sync", "sync"],
    ["GET", "/_matrix/client/r0/sync/", "sync"],
    ["POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", "sliding_sync"],
    ["POST", "/_matrix/client/v3/keys/query", "keys_query"],
    ["POST", "/_matrix/client/unstable/keys/query", "keys_query"],
    ["GET", "/_matrix/client/v3/keys/changes", "keys_changes"],
    ["GET", "/_matrix/client/versions", "versions"],
    ["GET", "/_resync/healthz", "health"],
    ["GET", "/_matrix/client/v3/rooms/!r:hs.test/messages", "passthrough"],
    ["PUT", "/_matrix/client/v3/sync", "passthrough"],
    ["GET", "/_matrix/client/v4/sync", "passthrough"],
  ])("%s %s → %s", (method, path, cls) => {
    expect(routeClass(method, path)).toBe(cls);
  });

  test("a quiet info level: routine traffic at debug, refreshes at info, 5xx at warn", () => {
    expect(levelFor("sync", 200)).toBe("debug");
    expect(levelFor("passthrough", 401)).toBe("debug");
    expect(levelFor("keys_query", 200)).toBe("debug");
    expect(levelFor("refresh", 202)).toBe("info");
    expect(levelFor("refresh", 429)).toBe("info");
    expect(levelFor("passthrough", 502)).toBe("warn");
    expect(levelFor("refresh", 504)).toBe("warn");
    expect(levelFor("sync", CLIENT_CLOSED)).toBe("debug");
    expect(levelFor("refresh", CLIENT_CLOSED)).toBe("debug");
  });
});
