// The Conduit-family key recipe of docs/deployment.md, run as an operator would: the Python
// script taken from the doc, against a small RocksDB laid out as Conduit, conduwuit, Tuwunel
// and continuwuity keep their key (column family `global`, key `keypair`, version + 0xFF +
// PKCS#8 DER) and written as current servers write it (RocksDB 9, table format_version 6), and
// with the hex value on stdin (the sqlite3 and ldb routes). Python with `rocksdict` is the
// CI venv's (.ci/run installs it into .cache/ci-venv).
import { execFile } from "node:child_process";
import { createHash, generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, test } from "vitest";
import { parseCli } from "../../src/config/config.ts";
import { loadKey } from "../../src/federation/stack.ts";
import { docBlocks } from "./helpers/fronts.ts";
import { ensurePythonTools } from "../../scripts/test-tools.ts";

// RESYNC_TEST_PYTHON: a python with rocksdict; otherwise the pinned one, installed on first use.
const interpreter = async () => process.env.RESYNC_TEST_PYTHON ?? (await ensurePythonTools());

// Written with rocksdict's own RocksDB: table format 6 and zstd, beside other column families.
const MAKE_DB = `
import sys
from rocksdict import Rdict, Options, BlockBasedOptions, DBCompressionType
path, value = sys.argv[1], bytes.fromhex(sys.argv[2])
opt = Options(raw_mode=True)
opt.create_if_missing(True)
opt.create_missing_column_families(True)
table = BlockBasedOptions()
table.set_format_version(6)
opt.set_block_based_table_factory(table)
opt.set_compression_type(DBCompressionType.zstd())
db = Rdict(path, opt, column_families={"global": opt, "userid_password": opt, "roomid_shortroomid": opt})
db.get_column_family("global")[b"keypair"] = value
db.get_column_family("userid_password")[b"@a:example.org"] = b"x"
db.close()
`;

async function python(args: string[], stdin?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const exe = await interpreter();
  return new Promise((resolve) => {
    const child = execFile(exe, args, { timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    child.stdin!.end(stdin ?? "");
  });
}

/** Every file in `dir` with its size and mtime: what a read-only reader leaves as it was. */
const listing = (dir: string) =>
  readdirSync(dir)
    .sort()
    .map((f) => {
      const st = statSync(join(dir, f));
      return [
        f,
        st.size,
        st.mtimeMs,
        createHash("sha256")
          .update(readFileSync(join(dir, f)))
          .digest("hex"),
      ];
    });

test("the doc's script reads the seed from a current RocksDB without writing to it, and from hex on stdin", async () => {
  const blocks = docBlocks("python");
  expect(blocks).toHaveLength(1);
  const dir = mkdtempSync(join(tmpdir(), "conduit-key-"));
  const script = join(dir, "conduit-seed.py");
  writeFileSync(script, blocks[0]!);

  // The server's key as ruma makes it: PKCS#8 DER, after the version and one 0xFF byte.
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const der = privateKey.export({ format: "der", type: "pkcs8" });
  const value = Buffer.concat([Buffer.from("a1B2c3"), Buffer.from([0xff]), der]);
  const seed = der
    .subarray(der.length - 32)
    .toString("base64")
    .replace(/=+$/, "");
  const expected = `RESYNC_SIGNING_KEY_ID=ed25519:a1B2c3\nRESYNC_SIGNING_KEY_SEED=${seed}\n`;

  const db = join(dir, "db");
  const made = await python(["-c", MAKE_DB, db, value.toString("hex")]);
  expect(made.stderr).toBe("");
  const before = listing(db);

  const fromDb = await python([script, db]);
  expect([fromDb.code, fromDb.stderr]).toEqual([0, ""]);
  expect(fromDb.stdout).toBe(expected); // the two lines and nothing else: safe to pipe or eval
  expect(listing(db)).toEqual(before);

  // The sqlite3 route prints bare hex, ldb prints 0x…: both piped in, and no prompt comes out.
  for (const hex of [`${value.toString("hex").toUpperCase()}\n`, `0x${value.toString("hex")}\n`]) {
    const fromHex = await python([script, "-"], hex);
    expect([fromHex.code, fromHex.stdout, fromHex.stderr]).toEqual([0, expected, ""]);
  }

  // And the proxy takes the result: the same public key as the server's.
  const env = Object.fromEntries(
    fromDb.stdout
      .trim()
      .split("\n")
      .map((l) => l.split(/=(.*)/s).slice(0, 2) as [string, string]),
  );
  const action = parseCli(["doctor", "--upstream", "http://127.0.0.1:1", "--server-name", "example.org"], env);
  if (action.kind !== "run") throw new Error(action.kind);
  const key = await loadKey(action.config);
  const raw = publicKey.export({ format: "der", type: "spki" }).subarray(-32);
  expect([key.keyId, key.publicKey]).toEqual(["ed25519:a1B2c3", raw.toString("base64").replace(/=+$/, "")]);
});
