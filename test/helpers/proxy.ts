// Start the proxy in-process for integration tests, configured through the real CLI parser.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseCli, type Config } from "../../src/config/config.ts";
import { createLogger } from "../../src/observe/log.ts";
import { startProxy, type RunningProxy } from "../../src/commands/serve.ts";

// Synapse-format key file (the spec's test seed); the key content is irrelevant to pass-through.
export function writeTestKey(dir = mkdtempSync(join(tmpdir(), "resync-key-"))): string {
  const path = join(dir, "test.signing.key");
  writeFileSync(path, "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n");
  return path;
}

export type TestEngine = "auto" | "bun" | "node";

// The client listener tests run against when they name none: the default (auto: the Bun front
// end under Bun, node:http under Deno), RESYNC_TEST_ENGINE, or useTestEngine() — so one test
// file can be run again through the other engine.
let defaultEngine: TestEngine = (process.env.RESYNC_TEST_ENGINE as TestEngine | undefined) ?? "auto";

export function useTestEngine(engine: TestEngine): void {
  defaultEngine = engine;
}

// The store tests run against when they name none: SQLite under the data dir, or with
// useTestDatabase() a PostgreSQL database per data dir (test/helpers/stores.ts), so one test
// file can be run again on the other back end.
let databaseFor: ((dataDir: string) => string) | undefined;

export function useTestDatabase(f: ((dataDir: string) => string) | undefined): void {
  databaseFor = f;
}

export function testConfig(upstream: string, extra: string[] = [], engine: TestEngine = defaultEngine): Config {
  const dataDir = mkdtempSync(join(tmpdir(), "resync-data-"));
  const at = extra.lastIndexOf("--data-dir");
  const database =
    databaseFor && !extra.includes("--database")
      ? ["--database", databaseFor(at === -1 ? dataDir : extra[at + 1]!)]
      : [];
  const action = parseCli(
    [
      "--upstream",
      upstream,
      "--server-name",
      "hs.test",
      "--signing-key",
      writeTestKey(),
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      dataDir,
      "--log-level",
      "error",
      "--engine",
      engine,
      // RESYNC_TEST_FRONT_THREADS=N runs the suite through N front-end threads (threads.ts).
      ...(process.env.RESYNC_TEST_FRONT_THREADS ? ["--front-threads", process.env.RESYNC_TEST_FRONT_THREADS] : []),
      ...database,
      ...extra,
    ],
    {},
  );
  if (action.kind !== "run") throw new Error("unexpected CLI action");
  return action.config;
}

export async function startTestProxy(
  upstream: string,
  extra: string[] = [],
  engine: TestEngine = defaultEngine,
): Promise<RunningProxy & { url: string; port: number; logs: string[] }> {
  const logs: string[] = [];
  const p = await startProxy(
    testConfig(upstream, extra, engine),
    createLogger("debug", (l) => void logs.push(l)),
  );
  const port = Number(p.address.split(":").pop());
  // logs: every line the proxy wrote (JSON, level debug and up), for tests that check what an operator sees.
  return { ...p, url: `http://127.0.0.1:${port}`, port, logs };
}
