// `matrix-resync-proxy doctor [SERVER…]`: a readable report of everything federation needs,
// for an operator setting the proxy up. Exit 0 when all checks pass.
import type { Config } from "../config/config.ts";
import { checkOwnKey, createFederation, loadKey } from "../federation/stack.ts";
import { createClientPaths } from "../http/client-paths.ts";
import { createUpstream, type Upstream } from "../http/upstream.ts";
import { checkRemoteAcceptsSignature } from "./doctor-signature.ts";
import { looseKeyFile } from "./key-permissions.ts";
import { checkWhoamiPath } from "../http/whoami-check.ts";

export async function runDoctor(
  config: Config,
  write: (line: string) => void = (l) => process.stdout.write(`${l}\n`),
): Promise<number> {
  let ok = true;
  const mark = (pass: boolean, line: string) => {
    if (!pass) ok = false;
    write(`${pass ? "ok  " : "FAIL"} ${line}`);
  };

  write(`matrix-resync-proxy doctor for ${config.serverName}`);
  const key = await loadKey(config).catch((e: Error) => e);
  if (key instanceof Error) {
    mark(false, `signing key: ${key.message}`);
    return 1;
  }
  mark(true, `signing key: ${key.keyId}, public key ${key.publicKey}`);
  const loose = config.signingKey ? looseKeyFile(config.signingKey) : undefined;
  if (loose) write(`warn ${loose.message}`);

  const upstream = createUpstream(config.upstream);
  try {
    const res = await upstream.open({
      method: "GET",
      target: "/_matrix/client/versions",
      headers: {},
      headerTimeoutMs: 5000,
    });
    res.resume();
    mark(res.statusCode === 200, `homeserver ${config.upstream}: /_matrix/client/versions answered ${res.statusCode}`);
  } catch (e) {
    mark(false, `homeserver ${config.upstream}: ${(e as Error).message}`);
  }
  await doctorWhoami(config.upstream, upstream, mark);

  const fed = createFederation(config);
  try {
    const check = await checkOwnKey(config, key, fed);
    const line = `key published by ${config.serverName}: ${check.status}${check.checkedUrl ? ` (${check.checkedUrl})` : ""}: ${check.detail}`;
    if (check.status === "unknown") write(`warn ${line}`);
    else mark(check.status === "published", line);

    for (const server of config.args) {
      write(`\ndiscovery of ${server}:`);
      try {
        const resolved = await fed.discovery.resolve(server);
        for (const step of resolved.steps) write(`     ${step}`);
        const res = await fed.transport.request(server, { method: "GET", path: "/_matrix/federation/v1/version" });
        let version = "";
        try {
          const body = JSON.parse(new TextDecoder().decode(res.body)) as {
            server?: { name?: string; version?: string };
          };
          version = body.server ? ` (${body.server.name ?? "?"} ${body.server.version ?? ""})`.trimEnd() : "";
        } catch {}
        mark(res.status === 200, `reached ${server}: /_matrix/federation/v1/version answered ${res.status}${version}`);
      } catch (e) {
        mark(false, `${server}: ${(e as Error).message}`);
      }
      const signed = await checkRemoteAcceptsSignature(
        { transport: fed.transport, origin: config.serverName, key },
        server,
      );
      mark(signed.status === "accepted", signed.line);
      for (const hint of signed.hints) write(`     likely cause: ${hint}`);
    }
  } finally {
    fed.transport.close();
  }
  write(ok ? "\nall checks passed" : "\nsome checks failed");
  return ok ? 0 : 1;
}

/** The homeserver's whoami (v3, or r0 on servers older than Synapse 1.48) refuses a missing token. */
async function doctorWhoami(
  base: string,
  upstream: Upstream,
  mark: (pass: boolean, line: string) => void,
): Promise<void> {
  const w = await checkWhoamiPath(createClientPaths({ upstream }), 5000);
  mark(w.ok, `homeserver ${base}: ${w.detail}`);
}
