// Once before any test file: Debian's packages the tests drive (nginx, Caddy, PostgreSQL's server,
// promtool, ss) are installed when missing and we run as root, so `npm test` works on a fresh
// Debian machine as the README says; one apt-get for all, not one per test file racing for its
// lock. Without root, the tests that need a package fail naming the command to run.
import { ensureDebianTools, missingDebianPackages } from "../scripts/test-tools.ts";

export default async function setup(): Promise<void> {
  if (process.getuid?.() === 0) return ensureDebianTools();
  const missing = await missingDebianPackages();
  if (missing.length > 0)
    process.stderr.write(
      `tests: Debian's ${missing.join(", ")} missing: sudo apt-get install -y ${missing.join(" ")}\n`,
    );
}
