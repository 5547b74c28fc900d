// The nginx block of docs/scaling.md, taken from the doc itself and run in front of N replicas:
// the replicas' loopback ports in place of the doc's addresses, plain HTTP on 127.0.0.1 in
// place of TLS (the TLS lines are the ones docs/deployment.md's test runs), files in a temp
// dir, nginx as a child process. Each substitution must find its text, so a doc edit that
// moves away from what is tested fails here loudly.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "./replicas.ts";

export const SCALING_MD = fileURLToPath(new URL("../../docs/scaling.md", import.meta.url));

/** The doc's fenced nginx blocks. */
export function scalingNginxBlocks(): string[] {
  const md = readFileSync(SCALING_MD, "utf8");
  return [...md.matchAll(/^```([\w-]*)\n([\s\S]*?)^```$/gm)].filter((m) => m[1] === "nginx").map((m) => m[2]!);
}

function swap(text: string, from: string | RegExp, to: string): string {
  const found = typeof from === "string" ? text.includes(from) : from.test(text);
  if (!found) throw new Error(`docs/scaling.md's nginx block no longer contains ${String(from)}: update the test`);
  return typeof from === "string" ? text.split(from).join(to) : text.replace(from, to);
}

/** The doc's block for these replica ports (as many as given, the doc's first lines). */
export function renderScalingNginx(
  block: string,
  o: {
    port: number;
    replicaPorts: number[];
    homeserverPort: number;
    dir: string;
    workers?: number | "auto";
    accessLog?: boolean;
  },
): string {
  let s = block;
  const servers = [...s.matchAll(/^( *)server 10\.0\.0\.\d+:8009( [^;\n]*)?;\n/gm)];
  if (servers.length < o.replicaPorts.length)
    throw new Error(`docs/scaling.md names ${servers.length} replicas; the test needs ${o.replicaPorts.length}`);
  servers.forEach((m, i) => {
    const port = o.replicaPorts[i];
    s = s.replace(m[0], port === undefined ? "" : `${m[1]}server 127.0.0.1:${port}${m[2] ?? ""};\n`);
  });
  s = swap(s, /listen 443 ssl http2;/, `listen 127.0.0.1:${o.port};`);
  s = swap(s, /\n\s*listen \[::\]:443 [^\n]*;/, "");
  s = swap(s, /\n\s*# ssl_certificate …; ssl_certificate_key …;/, "");
  s = swap(s, "server 127.0.0.1:8008;", `server 127.0.0.1:${o.homeserverPort};`);
  const d = o.dir;
  return [
    `pid ${d}/nginx.pid;`,
    `error_log ${d}/error.log info;`,
    // As root the workers would switch to an unprivileged user that cannot read the temp dir.
    ...(process.getuid?.() === 0 ? ["user root;"] : []),
    `worker_processes ${o.workers ?? 1};`,
    // A thousand clients at once, each with a connection to a replica behind it.
    "worker_rlimit_nofile 16384;",
    "events { worker_connections 8192; }",
    "http {",
    // Which replica served each request (and each retry on the next one), for the tests.
    "  log_format replicas '$status $request_method $upstream_addr $upstream_status $request_uri';",
    o.accessLog === false ? "  access_log off;" : `  access_log ${d}/access.log replicas;`,
    ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `  ${t}_temp_path ${d}/${t}_temp;`),
    s,
    "}",
    "",
  ].join("\n");
}

export interface NginxFront {
  port: number;
  dir: string;
  conf: string;
  /** nginx's own check of the rendered file. */
  check(): { ok: boolean; output: string };
  errorLog(): string;
  accessLog(): string;
  stop(): Promise<void>;
}

export async function startScalingNginx(
  replicaPorts: number[],
  homeserverPort: number,
  o: { workers?: number | "auto"; accessLog?: boolean } = {},
): Promise<NginxFront> {
  const blocks = scalingNginxBlocks();
  if (blocks.length !== 1) throw new Error(`docs/scaling.md has ${blocks.length} nginx blocks; the test renders one`);
  const dir = mkdtempSync(join(tmpdir(), "scaling-nginx-"));
  const port = await freePort();
  const conf = join(dir, "nginx.conf");
  writeFileSync(conf, renderScalingNginx(blocks[0]!, { port, replicaPorts, homeserverPort, dir, ...o }));
  const base = ["-p", dir, "-e", join(dir, "error.log"), "-c", conf];
  const check = () => {
    const r = spawnSync("nginx", ["-t", ...base], { encoding: "utf8" });
    return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
  };
  const checked = check();
  if (!checked.ok) throw new Error(`nginx -t rejects the rendered docs/scaling.md block:\n${checked.output}`);
  const child: ChildProcess = spawn("nginx", [...base, "-g", "daemon off;"], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (b: Buffer) => void (output += b.toString()));
  child.stderr!.on("data", (b: Buffer) => void (output += b.toString()));
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`nginx exited: ${output}`);
    const up = await new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (up) break;
    if (i > 100) throw new Error(`nginx does not listen on ${port}: ${output}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const read = (f: string) => {
    try {
      return readFileSync(join(dir, f), "utf8");
    } catch {
      return "";
    }
  };
  return {
    port,
    dir,
    conf,
    check,
    errorLog: () => read("error.log"),
    accessLog: () => read("access.log"),
    async stop() {
      if (child.exitCode !== null) return;
      const exited = once(child, "exit");
      child.kill("SIGTERM"); // nginx: fast shutdown, workers included
      await exited;
    },
  };
}
