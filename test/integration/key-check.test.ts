// checkKeyPublished against a real HTTP server on 127.0.0.1 playing the homeserver's
// `GET /_matrix/key/v2/server` (server-server-api §Retrieving server keys).

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { checkKeyPublished } from "../../src/federation/key-check.ts";
import { signJson, signingKeyFromSeed, type SigningKey } from "../../src/federation/signing.ts";

const ours = signingKeyFromSeed(new Uint8Array(32).fill(1), "ours");
const other = signingKeyFromSeed(new Uint8Array(32).fill(2), "other");
const sameIdOtherSeed = signingKeyFromSeed(new Uint8Array(32).fill(3), "ours");
const NAME = "hs.example";

function keyDoc(
  name: string,
  current: SigningKey[],
  old: SigningKey[] = [],
  signers = current,
): Record<string, unknown> {
  let doc: Record<string, unknown> = {
    server_name: name,
    valid_until_ts: 4102444800000,
    verify_keys: Object.fromEntries(current.map((k) => [k.keyId, { key: k.publicKey }])),
    old_verify_keys: Object.fromEntries(old.map((k) => [k.keyId, { key: k.publicKey, expired_ts: 1 }])),
  };
  for (const k of signers) doc = signJson(doc, name, k);
  return doc;
}

const routes: Record<string, (res: ServerResponse) => void> = {
  "/published": (res) => json(res, 200, keyDoc(NAME, [other, ours])),
  "/not-listed": (res) => json(res, 200, keyDoc(NAME, [other])),
  "/same-id-other-key": (res) => json(res, 200, keyDoc(NAME, [sameIdOtherSeed])),
  "/old": (res) => json(res, 200, keyDoc(NAME, [other], [ours])),
  "/wrong-name": (res) => json(res, 200, keyDoc("elsewhere.example", [ours])),
  "/listed-unsigned": (res) => json(res, 200, keyDoc(NAME, [ours, other], [], [other])),
  "/forged": (res) => {
    const doc = keyDoc(NAME, [other]);
    json(res, 200, { ...doc, verify_keys: { [other.keyId]: { key: ours.publicKey } } });
  },
  "/not-a-key-doc": (res) => json(res, 200, { hello: "world" }),
  "/html": (res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<html>hello</html>");
  },
  "/hang": () => {
    /* never answers */
  },
};

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

let server: Server;
let base: string;
let closedPortUrl: string;
const hits: string[] = [];

beforeAll(async () => {
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    hits.push(req.url ?? "");
    const route = routes[req.url ?? ""];
    if (route) route(res);
    else json(res, 404, { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  // A port that was just released: connecting to it is refused.
  const tmp = createServer();
  await new Promise<void>((resolve) => tmp.listen(0, "127.0.0.1", resolve));
  closedPortUrl = `http://127.0.0.1:${(tmp.address() as AddressInfo).port}/published`;
  await new Promise<void>((resolve) => tmp.close(() => resolve()));
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

const check = (paths: string[], key = ours, timeoutMs?: number) =>
  checkKeyPublished({
    serverName: NAME,
    key,
    urls: paths.map((p) => (p.startsWith("http") ? p : base + p)),
    timeoutMs,
  });

describe("checkKeyPublished over HTTP", () => {
  it("published: our key id and public key are listed and sign the answer", async () => {
    const res = await check(["/published"]);
    expect(res).toMatchObject({ status: "published", checkedUrl: `${base}/published` });
    expect(res.detail).toContain(ours.publicKey);
  });

  it("tries URLs in order and reports the one that answered", async () => {
    const res = await check([closedPortUrl, "/missing", "/published"]);
    expect(res).toMatchObject({ status: "published", checkedUrl: `${base}/published` });
  });

  it.each([
    [
      "our key id is absent",
      "/not-listed",
      /our key ed25519:ours .* is not published; the homeserver publishes ed25519:other/,
    ],
    [
      "the key id carries another public key",
      "/same-id-other-key",
      new RegExp(`published with a different public key \\(${sameIdOtherSeed.publicKey.replace(/[+/]/g, "\\$&")}\\)`),
    ],
    ["our key is only an old key", "/old", /only listed in old_verify_keys/],
    ["the homeserver has another server_name", "/wrong-name", /server_name is "elsewhere\.example", not "hs\.example"/],
  ])("mismatch when %s", async (_name, path, detail) => {
    const res = await check([path]);
    expect(res.status).toBe("mismatch");
    expect(res.checkedUrl).toBe(base + path);
    expect(res.detail).toMatch(detail);
  });

  it("stops at the first mismatch rather than trying further URLs", async () => {
    hits.length = 0;
    const res = await check(["/not-listed", "/published"]);
    expect(res.status).toBe("mismatch");
    expect(hits).toEqual(["/not-listed"]);
  });

  it.each([
    ["a 404", "/missing", /answered HTTP 404/],
    ["a non-JSON body", "/html", /not a JSON object/],
    ["JSON that is not a key document", "/not-a-key-doc", /not a server key document/],
    ["our key listed but not signing", "/listed-unsigned", /no valid signature by it/],
    ["a document whose signatures do not verify", "/forged", /signatures do not verify/],
  ])("unknown on %s", async (_name, path, detail) => {
    const res = await check([path]);
    expect(res.status).toBe("unknown");
    expect(res.checkedUrl).toBeUndefined();
    expect(res.detail).toContain(base + path);
    expect(res.detail).toMatch(detail);
  });

  it("unknown when the homeserver is unreachable or does not answer in time", async () => {
    const res = await check([closedPortUrl, "/hang"], ours, 300);
    expect(res.status).toBe("unknown");
    expect(res.detail).toContain(`${closedPortUrl}: unreachable`);
    expect(res.detail).toContain(`${base}/hang: no answer within 300 ms`);
  });

  it("unknown with no URLs", async () => {
    expect(await check([])).toEqual({ status: "unknown", detail: "no key URL to check" });
  });

  it("uses an injected fetchJson and passes it an abort signal", async () => {
    const seen: Array<[string, boolean]> = [];
    const res = await checkKeyPublished({
      serverName: NAME,
      key: ours,
      urls: ["https://hs.invalid/_matrix/key/v2/server"],
      fetchJson: async (url, signal) => {
        seen.push([url, signal instanceof AbortSignal]);
        return { status: 200, body: keyDoc(NAME, [ours]) };
      },
    });
    expect(res.status).toBe("published");
    expect(seen).toEqual([["https://hs.invalid/_matrix/key/v2/server", true]]);
  });

  it("gives up on an injected fetchJson that ignores its signal", async () => {
    const res = await checkKeyPublished({
      serverName: NAME,
      key: ours,
      urls: ["https://hs.invalid/k"],
      timeoutMs: 50,
      fetchJson: () => new Promise(() => {}),
    });
    expect(res).toEqual({ status: "unknown", detail: "https://hs.invalid/k: no answer within 50 ms" });
  });
});
