#!/usr/bin/env bun
// Entry point: parse configuration, print help, wire and start. No logic lives here.
import { ConfigError, helpText, parseCli } from "./config/config.ts";
import { VERSION } from "./config/version.ts";
import { runDoctor } from "./commands/doctor.ts";
import { runHealthcheck } from "./commands/healthcheck.ts";
import { runMigrateStore } from "./commands/migrate-store.ts";
import { serve } from "./commands/serve.ts";

async function main(): Promise<number> {
  let action;
  try {
    action = parseCli(process.argv.slice(2), process.env);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    process.stderr.write(`matrix-resync-proxy: ${e.message}\n`);
    return 2;
  }
  if (action.kind === "help") return (void process.stdout.write(`${helpText(VERSION)}\n`), 0);
  if (action.kind === "version") return (void process.stdout.write(`matrix-resync-proxy ${VERSION}\n`), 0);
  const { config } = action;
  if (config.command === "healthcheck") return runHealthcheck(config);
  if (config.command === "doctor") return runDoctor(config);
  if (config.command === "migrate-store") return runMigrateStore(config);
  await serve(config);
  return -1; // keep running; shutdown exits
}

main().then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err) => {
    process.stderr.write(`matrix-resync-proxy: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
