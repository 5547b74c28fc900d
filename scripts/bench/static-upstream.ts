// A C upstream for the pass-through family: nginx itself answering every request with the
// same small JSON body as upstream.ts, from memory (`return 200`), so the relays in front of
// it (the reference nginx, the bare relay, the proxy) are measured against an upstream that
// spends almost nothing per request. It also serves our signed key document, so the proxy's
// start-up key check passes on loopback as it does with upstream.ts. One worker: the Bun
// upstream is one process too.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { benchTmp, keyDocument } from "./binary.ts";
import { type Proc, startProc } from "./procs.ts";
import { freePort, waitForHttp } from "./wrk.ts";

/** upstream.ts's answer for any path it has no special case for (the pass-through GET). */
export const SMALL_JSON = JSON.stringify({ versions: ["v1.11"], unstable_features: { "org.example": true } });

/** `workers`: nginx's worker_processes (default 1; "auto" gives one per core, for bench-threads.ts). */
export async function startStaticUpstream(
  serverName: string,
  workers: number | "auto" = 1,
): Promise<{ proc: Proc; port: number }> {
  const port = await freePort();
  const dir = benchTmp();
  const conf = join(dir, "static-upstream.conf");
  // nginx's `return` text is a quoted string: neither JSON has a single quote to escape. Both
  // answers come from memory: nginx's workers may not read our private temporary directory.
  writeFileSync(
    conf,
    `
worker_processes ${workers};
worker_rlimit_nofile 16384;
pid ${dir}/static-upstream.pid;
error_log ${dir}/static-upstream-error.log warn;
daemon off;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${dir}/static-body;
  keepalive_requests 1000000;
  keepalive_timeout 180s;
  server {
    listen 127.0.0.1:${port} reuseport;
    default_type application/json;
    location = /_matrix/key/v2/server { return 200 '${keyDocument(serverName)}'; }
    location / { return 200 '${SMALL_JSON}'; }
  }
}`,
  );
  const proc = startProc("nginx", ["-c", conf, "-e", `${dir}/static-upstream-error.log`]);
  await waitForHttp(`http://127.0.0.1:${port}/_matrix/client/versions`);
  return { proc, port };
}
