// Installing the pinned Synapse into .homeservers/venv: `python3 -m venv` + pip with the
// committed requirements file (matrix-synapse and a pip freeze of its dependencies), so every
// machine runs the same Synapse. Skipped when the venv already has the pinned version.
// The same for the old Synapse 1.47 (.homeservers/venv-1.47, Python 3.9 from pyenv).
import { execFile } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  oldRequirementsPath,
  oldVenvDir,
  oldVenvPython,
  requirementsPath,
  stateDir,
  venvDir,
  venvPython,
} from "./layout.ts";

const run = promisify(execFile);

interface Venv {
  dir: string;
  python: string;
  requirements: string;
  /** The interpreter that creates the venv. */
  basePython: () => string;
}

const current: Venv = {
  dir: venvDir,
  python: venvPython,
  requirements: requirementsPath,
  basePython: () => process.env.PYTHON ?? "python3",
};
const old: Venv = { dir: oldVenvDir, python: oldVenvPython, requirements: oldRequirementsPath, basePython: python39 };

/**
 * Python 3.9 for Synapse 1.47 (its dependencies of early 2022 have no wheels, or do not work,
 * on later Pythons): $PYTHON39, else pyenv's newest 3.9.x, else `python3.9` on PATH.
 */
export function python39(): string {
  if (process.env.PYTHON39) return process.env.PYTHON39;
  const root = process.env.PYENV_ROOT ?? join(homedir(), ".pyenv");
  try {
    const versions = readdirSync(join(root, "versions"))
      .filter((v) => /^3\.9\.\d+$/.test(v))
      .sort((a, b) => Number(b.split(".")[2]) - Number(a.split(".")[2]));
    for (const v of versions) {
      const p = join(root, "versions", v, "bin", "python3.9");
      if (existsSync(p)) return p;
    }
  } catch {
    // no pyenv: fall through
  }
  return "python3.9";
}

async function pinnedVersion(v: Venv): Promise<string> {
  const match = /^matrix-synapse==(\S+)$/m.exec(await readFile(v.requirements, "utf8"));
  if (!match?.[1]) throw new Error(`${v.requirements} does not pin matrix-synapse`);
  return match[1];
}

export function pinnedSynapseVersion(): Promise<string> {
  return pinnedVersion(current);
}

async function installedVersion(v: Venv): Promise<string | undefined> {
  if (!existsSync(v.python)) return undefined;
  try {
    const { stdout } = await run(v.python, [
      "-c",
      "import importlib.metadata as m; print(m.version('matrix-synapse'))",
    ]);
    return stdout.trim();
  } catch {
    return undefined;
  }
}

const installing = new Map<string, Promise<string>>();

function install(v: Venv, log: (s: string) => void): Promise<string> {
  let p = installing.get(v.dir);
  if (!p) {
    p = doInstall(v, log).finally(() => installing.delete(v.dir));
    installing.set(v.dir, p);
  }
  return p;
}

/** Installs the pinned Synapse into .homeservers/venv (skipped when already there). */
export function installSynapse(opts: { log?: (s: string) => void } = {}): Promise<string> {
  return install(current, opts.log ?? (() => {}));
}

/** Installs Synapse 1.47 into .homeservers/venv-1.47 with Python 3.9 (skipped when already there). */
export function installOldSynapse(opts: { log?: (s: string) => void } = {}): Promise<string> {
  return install(old, opts.log ?? (() => {}));
}

async function doInstall(v: Venv, log: (s: string) => void): Promise<string> {
  const pinned = await pinnedVersion(v);
  const have = await installedVersion(v);
  if (have === pinned) return v.python;
  const started = Date.now();
  log(`installing matrix-synapse ${pinned} into ${v.dir} (found ${have ?? "none"})`);
  await mkdir(stateDir, { recursive: true });
  const python = v.basePython();
  try {
    await run(python, ["-m", "venv", "--clear", v.dir]);
    await run(v.python, ["-m", "pip", "install", "--disable-pip-version-check", "--quiet", "-r", v.requirements], {
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    const e = err as { stderr?: string };
    throw new Error(`installing Synapse ${pinned} with ${python} failed: ${e.stderr?.trim() || String(err)}`);
  }
  const now = await installedVersion(v);
  if (now !== pinned) throw new Error(`venv has matrix-synapse ${now ?? "none"} after install, expected ${pinned}`);
  log(`installed matrix-synapse ${pinned} in ${Math.round((Date.now() - started) / 1000)} s`);
  return v.python;
}
