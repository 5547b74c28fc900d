import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, expect, test } from "vitest";
import { decodeBase64 } from "../../src/federation/base64.ts";
import { signingKeyFromSeed, signJson, type SigningKey } from "../../src/federation/signing.ts";
import { runDoctor } from "../../src/commands/doctor.ts";
import { makeUser } from "../helpers/fake-devices.ts";
import { testConfig } from "../helpers/proxy.ts";
import { startWorld, type World } from "../helpers/world.ts";

let w: World;
const ours = signingKeyFromSeed(decodeBase64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"), "1");
const other = signingKeyFromSeed(new Uint8Array(32).fill(7), "other");

// What Synapse serves at /_matrix/key/v2/server: the server's keys, signed by them.
function publish(key: SigningKey) {
  w.hs.on("/_matrix/key/v2/server", (_req, res) => {
    const doc = signJson(
      {
        server_name: "hs.test",
        valid_until_ts: Date.now() + 3_600_000,
        verify_keys: { [key.keyId]: { key: key.publicKey } },
        old_verify_keys: {},
      },
      "hs.test",
      key,
    );
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(doc));
  });
}

beforeAll(async () => {
  w = await startWorld();
});
beforeEach(() => {
  w.remote.clearBehaviours();
  w.remote.setBehaviour(
    { kind: "status", status: 200, body: { server: { name: "FakeRemote", version: "0.1" } } },
    { endpoint: "other" },
  );
});
afterAll(() => w.close());

const doctor = async (extra: string[], args: string[]) => {
  const lines: string[] = [];
  const config = {
    ...testConfig(w.hs.url, ["--federation-ca", w.caPath, "--federation-allow-cidrs", "127.0.0.0/8", ...extra]),
    args,
  };
  const code = await runDoctor(config, (l) => void lines.push(l));
  return { code, text: lines.join("\n") };
};

test("doctor: key published, homeserver reachable, a server discovered step by step and reached", async () => {
  publish(ours);
  const { code, text } = await doctor([], [w.remote.serverName]);
  expect(text).toContain("ok   signing key: ed25519:1, public key XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI");
  expect(text).toMatch(/ok {3}homeserver .*answered 200/);
  expect(text).toMatch(/ok {3}key published by hs\.test: published/);
  expect(text).toContain(`discovery of ${w.remote.serverName}:`);
  expect(text).toMatch(/1\. .*IP literal/i);
  expect(text).toMatch(/TLS name: \(IP literal, no SNI\)/);
  expect(text).toMatch(/ok {3}reached .*answered 200 \(FakeRemote 0\.1\)/);
  expect(text).toContain("all checks passed");
  expect(code).toBe(0);
  expect(text).not.toContain("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"); // never the seed
});

/** The signed requests doctor made to the fake remote (device-list queries), as it saw them. */
const signedProbes = () => w.remote.requests.filter((r) => r.endpoint === "devices");

test("doctor: one signed request the remote verifies is reported as accepted", async () => {
  publish(ours);
  w.remote.resetStats();
  const { code, text } = await doctor([], [w.remote.serverName]);
  // Exactly one signed request, about a user of that server that cannot exist, verified by
  // the fake's independent X-Matrix check against the key hs.test publishes.
  const probes = signedProbes();
  expect(probes).toHaveLength(1);
  expect(probes[0]!.authorized).toBe(true);
  expect(probes[0]!.origin).toBe("hs.test");
  expect(probes[0]!.userId).toMatch(new RegExp(`^@[a-z0-9._=-]+:${w.remote.serverName.replace(/[.]/g, "\\.")}$`));
  expect(text).toMatch(new RegExp(`ok {3}signed request to ${w.remote.serverName.replace(/[.]/g, "\\.")}: accepted`));
  expect(text).toContain("all checks passed");
  expect(code).toBe(0);
  // A second run asks about another made-up user: nothing about a real account is ever read.
  await doctor([], [w.remote.serverName]);
  expect(signedProbes()[1]!.userId).not.toBe(probes[0]!.userId);
});

test("doctor: a remote that refuses our signature fails, naming the likely causes", async () => {
  publish(ours);
  // A key the remote cannot verify: not the one it trusts for hs.test (like a key file that is
  // not the homeserver's, or a homeserver whose key the remote cannot fetch).
  const keyPath = join(w.caPath, "..", "wrong.signing.key");
  writeFileSync(keyPath, "ed25519 wrong BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc\n");
  w.remote.resetStats();
  const { code, text } = await doctor(["--signing-key", keyPath], [w.remote.serverName]);
  expect(signedProbes()).toHaveLength(1);
  expect(signedProbes()[0]!.authorized).toBe(false);
  const line = text.split("\n").find((l) => l.includes("signed request to"));
  expect(line).toMatch(
    /^FAIL signed request to .*: refused: 401 M_UNAUTHORIZED \(unknown key hs\.test ed25519:wrong\)/,
  );
  expect(text).toContain("https://hs.test/_matrix/key/v2/server");
  expect(text).toMatch(/--server-name/);
  expect(text).toMatch(/clock/);
  expect(text).toContain("some checks failed");
  expect(code).toBe(1);
});

test.each([
  [
    "403 M_FORBIDDEN (a federation allow-list without us)",
    403,
    { errcode: "M_FORBIDDEN", error: "Federation denied with hs.test." },
    /^FAIL .*: refused: 403 M_FORBIDDEN \(Federation denied with hs\.test\.\)/,
  ],
  [
    "404 M_UNRECOGNIZED (no device-list endpoint)",
    404,
    { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" },
    /^FAIL .*: cannot tell: 404 M_UNRECOGNIZED .*does not serve/,
  ],
  ["503 (overloaded)", 503, { errcode: "M_UNKNOWN", error: "busy" }, /^FAIL .*: cannot tell: 503 M_UNKNOWN \(busy\)/],
  [
    "404 M_NOT_FOUND (a server that checks the user exists)",
    404,
    { errcode: "M_NOT_FOUND", error: "no such user" },
    /^ok {3}.*: accepted/,
  ],
])("doctor: the signed request answered %s", async (_name, status, body, want) => {
  publish(ours);
  w.remote.setBehaviour({ kind: "status", status, body }, { endpoint: "devices" });
  const { code, text } = await doctor([], [w.remote.serverName]);
  const line = text.split("\n").find((l) => l.includes("signed request to"));
  expect(line).toMatch(want);
  expect(code).toBe(String(want).includes("ok ") ? 0 : 1);
});

test("doctor: a refusal from a remote whose clock is far from ours names the difference", async () => {
  publish(ours);
  const date = new Date(Date.now() + 3_600_000).toUTCString();
  w.remote.setBehaviour(
    {
      kind: "status",
      status: 401,
      body: {
        errcode: "M_UNAUTHORIZED",
        error: "Failed to find any key to satisfy: _FetchKeyRequest(server_name='hs.test', key_ids=['ed25519:1'])",
      },
      headers: { date },
    },
    { endpoint: "devices" },
  );
  const { code, text } = await doctor([], [w.remote.serverName]);
  expect(text).toMatch(/FAIL signed request to .*: refused: 401 M_UNAUTHORIZED \(Failed to find any key to satisfy/);
  expect(text).toMatch(/likely cause: the clock: .*the remote's clock reads 3[56]\d\d s ahead of this machine's/);
  expect(code).toBe(1);
});

test("doctor: a key the homeserver does not publish fails, and so does an unreachable server", async () => {
  publish(other);
  const { code, text } = await doctor([], ["127.0.0.1:1"]);
  expect(text).toMatch(/FAIL key published by hs\.test: mismatch/);
  expect(text).toMatch(/FAIL 127\.0\.0\.1:1: /);
  expect(code).toBe(1);
});

test("serve: with a key proven unpublished, federation is refused with the reason", async () => {
  publish(other);
  await w.restartProxy();
  await expect.poll(() => w.proxy.keyCheck()?.status, { timeout: 10_000 }).toBe("mismatch");
  w.remote.setUser(makeUser(`@bob:${w.remote.serverName}`));
  const before = w.remote.requests.length;
  const res = await w.refresh(`@bob:${w.remote.serverName}`, w.login("alice"));
  expect(res.status).toBe(502);
  expect((await res.json()).error).toMatch(/federation is disabled.*ed25519:1/);
  expect(w.remote.requests.length).toBe(before);
});
