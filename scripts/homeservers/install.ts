// Installing the pinned Synapse into .homeservers/venv: `python3 -m venv` + pip with the
// committed requirements file (matrix-synapse and a pip freeze of its dependencies), so every
// machine runs the same Synapse. Skipped when the venv already has the pinned version.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { requirementsPath, stateDir, venvDir, venvPython } from "./layout.ts";

const run = promisify(execFile);

export async function pinnedSynapseVersion(): Promise<string> {
  const match = /^matrix-synapse==(\S+)$/m.exec(await readFile(requirementsPath, "utf8"));
  if (!match?.[1]) throw new Error(`${requirementsPath} does not pin matrix-synapse`);
  return match[1];
}

async function installedSynapseVersion(): Promise<string | undefined> {
  if (!existsSync(venvPython)) return undefined;
  try {
    const { stdout } = await run(venvPython, ["-c", "import importlib.metadata as m; print(m.version('matrix-synapse'))"]);
    return stdout.trim();
  } catch {
    return undefined;
  }
}

let installing: Promise<string> | undefined;

/** Installs the pinned Synapse into .homeservers/venv (skipped when already there). */
export function installSynapse(opts: { log?: (s: string) => void } = {}): Promise<string> {
  installing ??= doInstall(opts.log ?? (() => {})).finally(() => {
    installing = undefined;
  });
  return installing;
}

async function doInstall(log: (s: string) => void): Promise<string> {
  const pinned = await pinnedSynapseVersion();
  const have = await installedSynapseVersion();
  if (have === pinned) return venvPython;
  const started = Date.now();
  log(`installing matrix-synapse ${pinned} into ${venvDir} (found ${have ?? "none"})`);
  await mkdir(stateDir, { recursive: true });
  const python = process.env.PYTHON ?? "python3";
  try {
    await run(python, ["-m", "venv", "--clear", venvDir]);
    await run(venvPython, ["-m", "pip", "install", "--disable-pip-version-check", "--quiet", "-r", requirementsPath], {
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    const e = err as { stderr?: string };
    throw new Error(`installing Synapse failed: ${e.stderr?.trim() || String(err)}`);
  }
  const now = await installedSynapseVersion();
  if (now !== pinned) throw new Error(`venv has matrix-synapse ${now ?? "none"} after install, expected ${pinned}`);
  log(`installed matrix-synapse ${pinned} in ${Math.round((Date.now() - started) / 1000)} s`);
  return venvPython;
}
