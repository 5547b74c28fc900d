import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { ConfigError, parseCli } from "../../src/config/config.ts";

const base = ["--upstream", "http://127.0.0.1:8008", "--server-name", "example.org", "--signing-key", "/k"];
const run = (argv: string[], env: Record<string, string> = {}) => {
  const a = parseCli(argv, env);
  if (a.kind !== "run") throw new Error(a.kind);
  return a.config;
};
const fails = (argv: string[], env: Record<string, string> = {}) => {
  try {
    parseCli(argv, env);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as Error).message).not.toContain("\n");
    return (e as Error).message;
  }
  throw new Error("expected a ConfigError");
};

describe("configuration", () => {
  test("defaults follow the command-line contract", () => {
    const c = run(base);
    expect(c).toMatchObject({
      command: "serve",
      listen: "0.0.0.0:8009",
      dataDir: "./data",
      refreshWaitMs: 5000,
      refreshCacheMs: 30000,
      retryInitialMs: 30000,
      retryMaxMs: 3600000,
      logLevel: "info",
      federationAllowCidrs: [],
      trustedProxies: [],
    });
    expect(c.metricsListen).toBeUndefined();
  });

  test("--flag value and --flag=value both work", () => {
    expect(run([...base, "--refresh-wait-ms", "10"]).refreshWaitMs).toBe(10);
    expect(run([...base, "--refresh-wait-ms=11"]).refreshWaitMs).toBe(11);
  });

  test("env RESYNC_* is read, and flags win over env", () => {
    const env = {
      RESYNC_UPSTREAM: "http://hs:8008",
      RESYNC_SERVER_NAME: "e.org",
      RESYNC_SIGNING_KEY: "/k",
      RESYNC_LOG_LEVEL: "debug",
      RESYNC_FEDERATION_ALLOW_CIDRS: "10.0.0.0/8, 127.0.0.0/8",
    };
    const c = run([], env);
    expect(c.upstream).toBe("http://hs:8008");
    expect(c.logLevel).toBe("debug");
    expect(c.federationAllowCidrs).toEqual(["10.0.0.0/8", "127.0.0.0/8"]);
    expect(run(["--log-level", "warn"], env).logLevel).toBe("warn");
  });

  test("--config reads YAML and JSON with camelCase or kebab-case keys, below env and flags", () => {
    const dir = mkdtempSync(join(tmpdir(), "cfg-"));
    const yaml = join(dir, "c.yaml");
    writeFileSync(
      yaml,
      "upstream: http://a:1\nserverName: y.org\nsigning-key: /k\nrefreshWaitMs: 42\ntrustedProxies: [loopback]\n",
    );
    const c = run(["--config", yaml]);
    expect(c).toMatchObject({
      upstream: "http://a:1",
      serverName: "y.org",
      refreshWaitMs: 42,
      trustedProxies: ["loopback"],
    });
    expect(run(["--config", yaml], { RESYNC_REFRESH_WAIT_MS: "7" }).refreshWaitMs).toBe(7);
    expect(run(["--config", yaml, "--refresh-wait-ms", "8"], { RESYNC_REFRESH_WAIT_MS: "7" }).refreshWaitMs).toBe(8);
    const json = join(dir, "c.json");
    writeFileSync(json, JSON.stringify({ upstream: "http://b:2", "server-name": "z.org", signingKey: "/k" }));
    expect(run(["--config", json]).serverName).toBe("z.org");
  });

  test("errors name the flag, env var or file key and what was expected", () => {
    expect(fails([])).toMatch(/^--upstream \(or RESYNC_UPSTREAM\) is required: expected an http/);
    expect(fails([...base, "--refresh-wait-ms", "soon"])).toBe(
      '--refresh-wait-ms: expected an integer from 0 to 60000, got "soon"',
    );
    expect(fails(base, { RESYNC_LOG_LEVEL: "loud" })).toMatch(/^RESYNC_LOG_LEVEL: expected one of debug/);
    expect(fails([...base, "--upstream", "ftp://x"])).toMatch(/^--upstream: expected an http/);
    expect(fails([...base, "--listen", "8009"])).toMatch(/^--listen: expected host:port or unix:\/path/);
    expect(fails([...base, "--bogus", "1"])).toBe("unknown flag --bogus (see --help)");
    expect(fails([...base, "--listen"])).toMatch(/^--listen: missing value/);
    expect(fails([...base, "--retry-initial-ms", "10", "--retry-max-ms", "5"])).toMatch(/^--retry-max-ms/);
    const dir = mkdtempSync(join(tmpdir(), "cfg-"));
    writeFileSync(join(dir, "bad.yaml"), "refreshWaitMs: [1\n");
    expect(fails(["--config", join(dir, "bad.yaml")])).toMatch(/bad\.yaml: not valid YAML or JSON/);
    writeFileSync(join(dir, "k.yaml"), "refreshWaitMs: -1\nupstream: http://x\nserverName: a\nsigningKey: /k\n");
    expect(fails(["--config", join(dir, "k.yaml")])).toMatch(/^key 'refreshWaitMs' in .*k\.yaml: expected an integer/);
    writeFileSync(join(dir, "u.yaml"), "refreshWait: 1\n");
    expect(fails(["--config", join(dir, "u.yaml")])).toMatch(/unknown key 'refreshWait'/);
    expect(fails(["--config", join(dir, "missing.yaml")])).toMatch(
      /^--config .*missing\.yaml: cannot read file \(ENOENT\)/,
    );
  });

  test("self-healing: detection on, the audit every 6 hours at 2 a second, unless told otherwise", () => {
    expect(run(base)).toMatchObject({ detect: "on", auditIntervalMs: 21_600_000, auditMaxPerSecond: 2 });
    expect(
      run([...base, "--detect", "off", "--audit-interval-ms", "0", "--audit-max-per-second", "0.5"]),
    ).toMatchObject({ detect: "off", auditIntervalMs: 0, auditMaxPerSecond: 0.5 });
    expect(run(base, { RESYNC_DETECT: "off", RESYNC_AUDIT_INTERVAL_MS: "1000" })).toMatchObject({
      detect: "off",
      auditIntervalMs: 1000,
    });
  });

  test("bad self-healing values get one clear error naming the flag", () => {
    expect(fails([...base, "--detect", "maybe"])).toBe('--detect: expected on or off, got "maybe"');
    expect(fails(base, { RESYNC_DETECT: "yes" })).toBe('RESYNC_DETECT: expected on or off, got "yes"');
    for (const bad of ["-1", "6h", "1.5", ""])
      expect(fails([...base, `--audit-interval-ms=${bad}`])).toBe(
        `--audit-interval-ms: expected a non-negative integer (0 = off), got "${bad}"`,
      );
    for (const bad of ["-2", "0", "fast", "1e3", "1001"])
      expect(fails([...base, "--audit-max-per-second", bad])).toBe(
        `--audit-max-per-second: expected a number from 0.001 to 1000, got "${bad}"`,
      );
  });

  test("a signing key is required, as a file or as seed + key id", () => {
    expect(fails(["--upstream", "http://x", "--server-name", "a"])).toMatch(/^--signing-key/);
    expect(
      run([
        "--upstream",
        "http://x",
        "--server-name",
        "a",
        "--signing-key-seed",
        "YJDB",
        "--signing-key-id",
        "ed25519:a",
      ]).signingKeyId,
    ).toBe("ed25519:a");
  });

  test("subcommands, help and version", () => {
    expect(parseCli(["--help"], {}).kind).toBe("help");
    expect(parseCli(["--version"], {}).kind).toBe("version");
    expect(run(["healthcheck"]).command).toBe("healthcheck"); // needs nothing but the listener
    expect(run(["doctor", ...base, "matrix.org"]).args).toEqual(["matrix.org"]);
    expect(fails([...base, "stray"])).toMatch(/unexpected argument 'stray'/);
  });

  test("server names and listen addresses accept IPv6 literals and ports", () => {
    expect(run([...base.slice(0, 2), "--server-name", "[::1]:8448", "--signing-key", "/k"]).serverName).toBe(
      "[::1]:8448",
    );
    expect(run([...base, "--listen", "[::]:8009"]).listen).toBe("[::]:8009");
    expect(run([...base, "--listen", "unix:/run/resync.sock"]).listen).toBe("unix:/run/resync.sock");
  });
});

describe("--database and migrate-store", () => {
  test("sqlite: by default; postgres:// from a flag, RESYNC_DATABASE or the config file; a bad URL's password is not shown", () => {
    expect(run(base).database).toBe("sqlite:");
    const url = "postgres://resync:pw@db.internal:5432/resync";
    expect(run([...base, "--database", url]).database).toBe(url);
    expect(run(base, { RESYNC_DATABASE: url }).database).toBe(url);
    const file = join(mkdtempSync(join(tmpdir(), "cfg-db-")), "c.yaml");
    writeFileSync(file, `database: ${url}\n`);
    expect(run([...base, "--config", file]).database).toBe(url);
    const msg = fails([...base, "--database", "mysql://resync:hunter2@db/resync"]);
    expect(msg).toContain("--database: expected sqlite:");
    expect(msg).not.toContain("hunter2");
  });

  test("migrate-store needs --from and --to, and no signing key", () => {
    expect(fails(["migrate-store", "--to", "postgres://h/db"])).toMatch(/^--from \(or RESYNC_FROM\) is required/);
    const c = run(["migrate-store", "--from", "sqlite:/var/lib/x", "--to", "postgres://h/db"]);
    expect(c).toMatchObject({ command: "migrate-store", from: "sqlite:/var/lib/x", existingTarget: "refuse" });
    expect(
      fails(["migrate-store", "--from", "sqlite:", "--to", "postgres://h/db", "--existing-target", "merge"]),
    ).toContain("expected refuse or replace");
  });
});
