import { afterAll, beforeAll, expect, test } from "vitest";
import { decodeBase64 } from "../../src/federation/base64.ts";
import { signingKeyFromSeed, signJson, type SigningKey } from "../../src/federation/signing.ts";
import { runDoctor } from "../../src/ops/doctor.ts";
import { makeUser } from "../helpers/fake-devices.ts";
import { testConfig } from "../helpers/proxy.ts";
import { startWorld, type World } from "../helpers/world.ts";

let w: World;
const ours = signingKeyFromSeed(decodeBase64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"), "1");
const other = signingKeyFromSeed(new Uint8Array(32).fill(7), "other");

// What Synapse serves at /_matrix/key/v2/server: the server's keys, signed by them.
function publish(key: SigningKey) {
  w.hs.on("/_matrix/key/v2/server", (_req, res) => {
    const doc = signJson({ server_name: "hs.test", valid_until_ts: Date.now() + 3_600_000, verify_keys: { [key.keyId]: { key: key.publicKey } }, old_verify_keys: {} }, "hs.test", key);
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(doc));
  });
}

beforeAll(async () => {
  w = await startWorld();
  w.remote.setBehaviour({ kind: "status", status: 200, body: { server: { name: "FakeRemote", version: "0.1" } } }, { endpoint: "other" });
});
afterAll(() => w.close());

const doctor = async (extra: string[], args: string[]) => {
  const lines: string[] = [];
  const config = { ...testConfig(w.hs.url, ["--federation-ca", w.caPath, "--federation-allow-cidrs", "127.0.0.0/8", ...extra]), args };
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
