// What self-healing takes from a /keys/query answer the homeserver gave: the views it shows
// (hs-view.ts) and the two signals it can carry (resync/detect.ts): a user with half a
// cross-signing identity, and servers listed in `failures`. Pure, and small to pass between
// threads (view-parser.ts parses large answers off the event loop).
import type { HsView } from "../matrix/device.ts";
import { crossKeyOf, viewsFromAnswer } from "./hs-view.ts";

export interface AnswerSummary {
  views: HsView[];
  /** Remote users with a master key but no self-signing key (hasMaster), or the reverse. */
  halfCrossSigning: { userId: string; hasMaster: boolean }[];
  failedServers: string[];
  /** Remote users the answer lists in device_keys (their server answered, failures or not). */
  answered: string[];
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

export function summarize(
  answer: Json,
  requested: Record<string, string[]>,
  users: readonly string[],
  now: number,
): AnswerSummary {
  const mk = isObject(answer.master_keys) ? answer.master_keys : {};
  const ssk = isObject(answer.self_signing_keys) ? answer.self_signing_keys : {};
  const halfCrossSigning: AnswerSummary["halfCrossSigning"] = [];
  for (const u of users) {
    const hasMaster = Object.hasOwn(mk, u) && crossKeyOf(mk[u]) !== undefined;
    const hasSelf = Object.hasOwn(ssk, u) && crossKeyOf(ssk[u]) !== undefined;
    if (hasMaster !== hasSelf) halfCrossSigning.push({ userId: u, hasMaster });
  }
  const failedServers = isObject(answer.failures) ? Object.keys(answer.failures).slice(0, 1000) : [];
  const dk = isObject(answer.device_keys) ? answer.device_keys : {};
  const answered = failedServers.length ? users.filter((u) => Object.hasOwn(dk, u)) : [];
  return { views: viewsFromAnswer(answer, requested, users, now), halfCrossSigning, failedServers, answered };
}
