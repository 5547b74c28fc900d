// Secrets and metadata over real sockets, on each engine: an access token under any encoding of
// its parameter name, a password in --upstream, the data dir's and the database's modes, and a
// signing key file that others can read.
import { chmodSync, mkdtempSync, readdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { runDoctor } from "../../src/commands/doctor.ts";
import { startFakeHomeserver, type FakeHomeserver } from "../helpers/fake-homeserver.ts";
import { testConfig, type TestEngine, writeTestKey } from "../helpers/proxy.ts";
import { startLoggedProxy } from "./ops-helpers.ts";

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
// Under Deno both engines are node:http; under Bun the byte-level front end logs pass-through
// requests itself (engine/bun/access-log.ts), node:http through request-log.ts.
const engines: TestEngine[] = isBun ? ["bun", "node"] : ["node"];
const TOKEN = "syt_ZW5jb2RlZA_SECRETencodedNAME_9z8y7x";
const PASSWORD = "hunter2-upstream-secret";
const KEY_WARNING = /signing key file .* is readable by (its group|others)/;

let hs: FakeHomeserver;
beforeAll(async () => {
  hs = await startFakeHomeserver();
  hs.tokens.set(TOKEN, ["@enc:hs.test", "ENCDEV"]);
});
afterAll(() => hs.close());

const withPassword = () => hs.url.replace("http://", `http://operator:${PASSWORD}@`);
const mode = (path: string) => statSync(path).mode & 0o777;

describe.each(engines)("engine %s", (engine) => {
  const front = ["--engine", engine];

  test("an access token is redacted whatever encoding names its parameter, in every request line", async () => {
    const p = await startLoggedProxy(hs.url, front);
    try {
      // Each name decodes to access_token (or refresh_token): the homeserver reads them all.
      const names = [
        "access%5Ftoken",
        "%61ccess_token",
        "access_tok%65n",
        "%61%63%63%65%73%73%5f%74%6f%6b%65%6e",
        "refresh%5ftoken",
      ];
      for (const [i, name] of names.entries()) {
        const res = await fetch(`${p.url}/_matrix/client/v3/joined_rooms?x=${i}&${name}=${TOKEN}&y=1`);
        await res.arrayBuffer();
        expect(hs.seen.at(-1)!.target).toContain(`${name}=${TOKEN}`); // forwarded untouched
      }
      // A refresh goes through the app on both engines (request-log.ts).
      await (
        await fetch(
          `${p.url}/_matrix/client/v3/user/${encodeURIComponent("@bob:hs.test")}/devices/refresh?access%5Ftoken=${TOKEN}`,
          { method: "POST" },
        )
      ).arrayBuffer();
      await expect.poll(() => p.records().filter((r) => r.msg === "request").length).toBe(names.length + 1);
      const all = p.lines.join("");
      expect(all).not.toContain(TOKEN);
      const targets = p
        .records()
        .filter((r) => r.msg === "request")
        .map((r) => String(r.target));
      expect(targets[0]).toBe("/_matrix/client/v3/joined_rooms?x=0&access%5Ftoken=<redacted>&y=1");
      expect(targets.at(-1)).toContain("?access%5Ftoken=<redacted>");
    } finally {
      await p.close(1000);
    }
  });

  test("a password in --upstream is in no log line, and the homeserver is still reached", async () => {
    const p = await startLoggedProxy(withPassword(), [...front, "--log-level", "debug"]);
    try {
      const res = await fetch(`${p.url}/_matrix/client/versions`);
      expect(res.status).toBe(200);
      const listening = p.records().find((r) => r.msg === "listening")!;
      expect(listening.upstream).toBe(`${hs.url}/`);
      expect(p.lines.join("")).not.toContain(PASSWORD);
      // Never sent either: no Authorization built from the userinfo.
      expect(hs.seen.at(-1)!.headers.authorization).toBeUndefined();
    } finally {
      await p.close(1000);
    }
  });
});

describe("files the proxy creates are its own", () => {
  test("a new data dir is 0700, the database and its WAL/SHM files 0600", async () => {
    const dataDir = join(mkdtempSync(join(tmpdir(), "modes-")), "state", "data");
    const p = await startLoggedProxy(hs.url, ["--data-dir", dataDir]);
    try {
      // A refresh of a local user writes nothing, but start-up already wrote (ping, migrations).
      expect(mode(dataDir)).toBe(0o700);
      const files = readdirSync(dataDir);
      expect(files).toEqual(expect.arrayContaining(["resync.sqlite3", "resync.sqlite3-wal", "resync.sqlite3-shm"]));
      for (const f of files) expect([f, mode(join(dataDir, f))]).toEqual([f, 0o600]);
    } finally {
      await p.close(1000);
    }
  });

  test("a database left 0644 by an older version is tightened to 0600 at start", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "modes-old-"));
    const first = await startLoggedProxy(hs.url, ["--data-dir", dataDir]);
    await first.close(1000);
    chmodSync(join(dataDir, "resync.sqlite3"), 0o644);
    const p = await startLoggedProxy(hs.url, ["--data-dir", dataDir]);
    try {
      expect(mode(join(dataDir, "resync.sqlite3"))).toBe(0o600);
    } finally {
      await p.close(1000);
    }
  });
});

describe("a signing key file others can read", () => {
  const keyWith = (m: number) => {
    const path = writeTestKey();
    chmodSync(path, m);
    return path;
  };

  test("serve warns once at start-up; a 0600 key gets no warning", async () => {
    const loose = await startLoggedProxy(hs.url, ["--signing-key", keyWith(0o644)], "info");
    const tight = await startLoggedProxy(hs.url, ["--signing-key", keyWith(0o600)], "info");
    try {
      const warnings = loose.records().filter((r) => KEY_WARNING.test(String(r.msg)));
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatchObject({ level: "warn", mode: "0644" });
      expect(tight.records().filter((r) => KEY_WARNING.test(String(r.msg)))).toEqual([]);
    } finally {
      await loose.close(1000);
      await tight.close(1000);
    }
  });

  test("doctor warns too, and prints --upstream without its password", async () => {
    const lines: string[] = [];
    const config = testConfig(withPassword(), ["--signing-key", keyWith(0o640)]);
    await runDoctor({ ...config, args: [] }, (l) => void lines.push(l));
    const text = lines.join("\n");
    expect(text).toMatch(/^warn signing key file .* is readable by its group \(mode 0640\)/m);
    expect(text).toMatch(/homeserver http:\/\/127\.0\.0\.1:\d+\/: \/_matrix\/client\/versions answered 200/);
    expect(text).not.toContain(PASSWORD);
    lines.length = 0;
    await runDoctor({ ...testConfig(hs.url, ["--signing-key", keyWith(0o600)]), args: [] }, (l) => void lines.push(l));
    expect(lines.join("\n")).not.toMatch(KEY_WARNING);
  });
});
