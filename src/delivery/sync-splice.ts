// /sync injection on the raw body: only the member that holds device_lists is parsed and
// re-encoded; the rest of the body (rooms: nearly all of it) is copied through as bytes.
import { memberValue, topLevelMembers, withMember } from "./json-members.ts";
import { injectChanged, reportedChanged, type SyncFlavour } from "./sync-inject.ts";

export interface Spliced {
  body: Buffer;
  /** Users now in `changed` (added, or already there). */
  added: string[];
  /** The homeserver's own `changed`, before we touched it. */
  reported: string[];
  /** next_batch (sync) or pos (sliding sync). */
  token: string | undefined;
}

const MEMBER = { sync: "device_lists", sliding: "extensions" } as const;
const TOKEN = { sync: "next_batch", sliding: "pos" } as const;

/** Undefined when the body is not a JSON object: the caller then sends it unchanged. */
export function spliceChanged(raw: Buffer, users: readonly string[], flavour: SyncFlavour): Spliced | undefined {
  const layout = topLevelMembers(raw);
  if (!layout) return undefined;
  const key = MEMBER[flavour];
  const original = memberValue(raw, layout.members.get(key));
  const shell: Record<string, unknown> = original === undefined ? {} : { [key]: original };
  const reported = reportedChanged(shell, flavour);
  const before = JSON.stringify(shell[key]);
  const added = injectChanged(shell, users, flavour);
  const tokenValue = memberValue(raw, layout.members.get(TOKEN[flavour]));
  const token = typeof tokenValue === "string" ? tokenValue : undefined;
  const body = JSON.stringify(shell[key]) === before ? raw : withMember(raw, layout, key, shell[key]);
  return { body, added, reported, token };
}

/** The homeserver's own device_lists.changed, read without parsing the whole body. */
export function reportedInRaw(raw: Buffer, flavour: SyncFlavour): string[] {
  const layout = topLevelMembers(raw);
  if (!layout) return [];
  const value = memberValue(raw, layout.members.get(MEMBER[flavour]));
  return value === undefined ? [] : reportedChanged({ [MEMBER[flavour]]: value }, flavour);
}
