// Where the harness keeps things, and the fixed identity of each homeserver.
// The ports are fixed because they are part of the server names ("localhost:8481"):
// federation peers find each other by server name, so the TLS listener must sit on
// exactly that port (server-server-api §Resolving server names, step 2: hostname with
// explicit port → A/AAAA of "localhost", certificate for "localhost").
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const repoRoot: string = fileURLToPath(new URL("../..", import.meta.url));
export const stateDir: string = join(repoRoot, ".homeservers");
export const venvDir: string = join(stateDir, "venv");
export const venvPython: string = join(venvDir, "bin", "python");
export const tlsDir: string = join(stateDir, "tls");
export const requirementsPath: string = fileURLToPath(new URL("./requirements.txt", import.meta.url));

export type HomeserverName = "hs1" | "hs2";
/** The two-server harness's names, and "old": the Synapse 1.47 of test/e2e/old-synapse.test.ts. */
export type SlotName = HomeserverName | "old";

export interface HomeserverSlot {
  name: SlotName;
  serverName: string;
  /** TLS listener: federation + client, bound to 127.0.0.1 on the server name's port. */
  tlsPort: number;
  /** Plain-http client listener: the proxy's upstream. */
  clientPort: number;
  /** Signing key version; the key id is `ed25519:<version>`. */
  keyVersion: string;
}

export const slots: Record<HomeserverName, HomeserverSlot> = {
  hs1: { name: "hs1", serverName: "localhost:8481", tlsPort: 8481, clientPort: 8491, keyVersion: "a_hs1" },
  hs2: { name: "hs2", serverName: "localhost:8482", tlsPort: 8482, clientPort: 8492, keyVersion: "a_hs2" },
};

// Synapse 1.47 (the last release before the v3 client paths), on ports of its own so it never
// meets hs1/hs2's lock. It needs Python 3.9 and early-2022 libraries: a venv of its own.
export const oldSlot: HomeserverSlot = {
  name: "old",
  serverName: "localhost:8483",
  tlsPort: 8483,
  clientPort: 8493,
  keyVersion: "a_old",
};
export const oldVenvDir: string = join(stateDir, "venv-1.47");
export const oldVenvPython: string = join(oldVenvDir, "bin", "python");
/** Its own CA and leaf: it starts without hs1/hs2's lock, so it must not share their tls/. */
export const oldTlsDir: string = join(stateDir, "tls-old");
export const oldRequirementsPath: string = fileURLToPath(new URL("./requirements-1.47.txt", import.meta.url));

export interface SlotPaths {
  dataDir: string;
  configPath: string;
  /** The caller's overrides of the last start, so a restart without overrides keeps them. */
  overridesPath: string;
  signingKeyPath: string;
  logPath: string;
  dbPath: string;
  pidPath: string;
  mediaDir: string;
}

export function slotPaths(name: SlotName): SlotPaths {
  const dataDir = join(stateDir, name);
  return {
    dataDir,
    configPath: join(dataDir, "homeserver.yaml"),
    overridesPath: join(dataDir, "overrides.json"),
    signingKeyPath: join(dataDir, `${name}.signing.key`),
    logPath: join(dataDir, "homeserver.log"),
    dbPath: join(dataDir, "homeserver.db"),
    pidPath: join(dataDir, "homeserver.pid"),
    mediaDir: join(dataDir, "media_store"),
  };
}
