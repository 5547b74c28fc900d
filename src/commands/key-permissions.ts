// The signing key signs federation requests as the homeserver itself: anyone who can read the
// file can impersonate the server. Nothing breaks when others can read it, so we warn (at
// start-up and in `doctor`) rather than refuse.
import { statSync } from "node:fs";

export interface LooseKeyFile {
  message: string;
  mode: string;
}

/** A warning when the key file at `path` is readable by its group or others; else undefined. */
export function looseKeyFile(path: string): LooseKeyFile | undefined {
  const st = statSync(path, { throwIfNoEntry: false });
  if (!st) return undefined; // loading the key has already reported a missing file
  const bits = st.mode & 0o777;
  const who = [bits & 0o040 ? "its group" : "", bits & 0o004 ? "others" : ""].filter(Boolean).join(" and ");
  if (!who) return undefined;
  const mode = bits.toString(8).padStart(4, "0");
  return {
    mode,
    message:
      `signing key file ${path} is readable by ${who} (mode ${mode}): anyone who reads it can sign as the homeserver; ` +
      "make it 0600, owned by the user that runs the proxy (the homeserver's user, or a copy of the key for the proxy's own user)",
  };
}
