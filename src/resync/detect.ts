// Suspicions: signs in the traffic we already carry that a remote user's device list, as the
// homeserver serves it, is stale (docs/architecture.md "Self-healing"). Each becomes a background
// check through the resyncer (single-flight, cache, per-target limit, destination backoff), so a
// flood of forged events cannot cost more fetches than those allow. The homeserver already
// resyncs on its own for encrypted room events and key requests from unknown devices received
// over federation; these cover what it does not act on.
import type { HsView } from "../matrix/device.ts";
import { knowsCurveKey, knowsDevice, viewOfSnapshot } from "../delivery/hs-view.ts";
import type { AnswerSummary } from "../delivery/keys-answer.ts";
import type { ToDeviceClue } from "../delivery/to-device-clues.ts";
import type { Views } from "../delivery/views.ts";
import type { Logger } from "../observe/log.ts";
import type { Metrics } from "../observe/metrics.ts";
import { isValidUserId } from "../matrix/user-id.ts";
import type { Requester } from "../http/auth.ts";
import type { Store } from "../store/store.ts";
import { RateLimiter } from "./rate-limit.ts";
import { type Resyncer } from "./resyncer.ts";
import { serverOf } from "../matrix/user-id.ts";

export type Signal =
  | "olm_unknown_sender_key"
  | "key_request_unknown_device"
  | "secret_request_unknown_device"
  | "verification_unknown_device"
  | "cross_signing_incomplete"
  | "keys_query_failure";

export interface DetectorOptions {
  serverName: string;
  resyncer: Resyncer;
  views: Views;
  store: Store;
  /** The device that saw a signal hears of the outcome (delivery.trackQuery: its caps apply). */
  track: (who: Requester, targets: string[]) => void;
  log: Logger;
  metrics?: Metrics;
  now?: () => number;
}

/** Distinct senders looked at per /sync body. */
const MAX_SENDERS = 20;
/** A record of the homeserver's view younger than this is not asked again before suspecting. */
const RECHECK_MS = 10_000;
/** Users of one failed server asked about per /keys/query answer. */
const MAX_FAILED_USERS = 50;

export class Detector {
  readonly #o: DetectorOptions;
  // A sender we hold no view of costs one /keys/query to the homeserver: at most this many per
  // syncing device, so a flood of events from invented senders cannot turn into a flood there.
  readonly #lookups: RateLimiter;
  // A server the homeserver could not reach: its users are looked at once per 10 minutes at most
  // (the destination backoff then applies to our fetches too): "back off, do not hammer it".
  readonly #failedServers: RateLimiter;

  constructor(o: DetectorOptions) {
    this.#o = o;
    const now = o.now ?? Date.now;
    this.#lookups = new RateLimiter({ burst: 10, perSecond: 10 / 60 }, now);
    this.#failedServers = new RateLimiter({ burst: 1, perSecond: 1 / 600 }, now);
  }

  /** The to-device events a device just received. */
  async toDevice(who: Requester, clues: readonly ToDeviceClue[]): Promise<void> {
    const bySender = new Map<string, ToDeviceClue[]>();
    // A body's events mostly come from a few senders: each is validated once.
    const refused = new Set<string>();
    for (const c of clues) {
      if (refused.has(c.sender)) continue;
      const list = bySender.get(c.sender);
      if (!list && (serverOf(c.sender) === this.#o.serverName || !isValidUserId(c.sender))) {
        refused.add(c.sender); // our own users: the homeserver is authoritative
        continue;
      }
      if (list) list.push(c);
      else if (bySender.size < MAX_SENDERS) bySender.set(c.sender, [c]);
    }
    for (const [sender, list] of bySender) {
      try {
        await this.#checkSender(who, sender, list);
      } catch (e) {
        this.#o.log.debug("could not check to-device events", { sender, error: String(e) });
      }
    }
  }

  async #checkSender(who: Requester, sender: string, clues: ToDeviceClue[]): Promise<void> {
    const { views } = this.#o;
    const device = `${who.userId}|${who.deviceId}`;
    let view = await views.get(sender);
    let asked = false;
    if (!view && this.#lookups.take(device) === 0) {
      view = await views.query(sender, who.token);
      asked = true;
    }
    // The homeserver cannot say anything about this sender: nobody here tracks them, and a
    // client that does not track a user does not re-query their keys anyway.
    if (!view) return;
    let unknown = await this.#firstUnknown(sender, clues, view);
    // Our record may be behind the homeserver: in a healthy exchange the homeserver hears of a
    // new device (and names its owner in device_lists.changed) before the client has re-queried
    // through us. Ask it again before suspecting; a record younger than RECHECK_MS is current.
    const now = (this.#o.now ?? Date.now)();
    if (unknown && !asked && now - view.seenAt >= RECHECK_MS && this.#lookups.take(device) === 0) {
      const current = await views.query(sender, who.token);
      if (current) unknown = await this.#firstUnknown(sender, clues, current);
    }
    if (!unknown) return;
    const { clue, signal } = unknown;
    const about =
      clue.senderKey !== undefined ? "an unknown curve25519 key" : `unknown device ${clue.deviceId!.slice(0, 40)}`;
    this.suspect(sender, signal, { token: who.token, tracker: who, why: `${clue.type} from ${about}` });
  }

  /** The first clue naming a key or device that neither the view nor our overlay knows. */
  async #firstUnknown(
    sender: string,
    clues: ToDeviceClue[],
    view: HsView,
  ): Promise<{ clue: ToDeviceClue; signal: Signal } | undefined> {
    const served = await this.#o.store.getSnapshot(sender);
    const known: HsView[] = served ? [view, viewOfSnapshot(served)] : [view];
    // A device sends many events with the same key or device id: each is looked up once.
    const seen = new Set<string>();
    for (const clue of clues) {
      const key = clue.senderKey !== undefined ? `k${clue.senderKey}` : `${clue.type}\u0000${clue.deviceId}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const signal = this.#unknown(clue, known);
      if (signal) return { clue, signal };
    }
    return undefined;
  }

  #unknown(c: ToDeviceClue, views: HsView[]): Signal | undefined {
    if (c.senderKey !== undefined)
      return views.some((v) => knowsCurveKey(v, c.senderKey!)) ? undefined : "olm_unknown_sender_key";
    if (c.deviceId === undefined || views.some((v) => knowsDevice(v, c.deviceId!))) return undefined;
    if (c.type === "m.room_key_request") return "key_request_unknown_device";
    if (c.type === "m.secret.request") return "secret_request_unknown_device";
    return "verification_unknown_device";
  }

  /** What a /keys/query answer the homeserver gave says (delivery/keys-answer.ts), for remote users requested. */
  keysQuery(
    who: Requester,
    summary: Pick<AnswerSummary, "halfCrossSigning" | "failedServers" | "answered">,
    remote: readonly string[],
  ): void {
    for (const { userId, hasMaster } of summary.halfCrossSigning) {
      this.suspect(userId, "cross_signing_incomplete", {
        token: who.token,
        why: hasMaster ? "master key without self-signing key" : "self-signing key without master key",
      });
    }
    // A user the answer lists was answered by their server after all: Synapse lists a server in
    // failures when its resync of a stale cache fails, then asks the server directly
    // (handlers/e2e_keys.py, _query_devices_for_destination), as it does in healthy traffic.
    const answered = new Set(summary.answered);
    for (const server of summary.failedServers) {
      if (server === this.#o.serverName) continue;
      const users = remote.filter((u) => serverOf(u) === server && !answered.has(u)).slice(0, MAX_FAILED_USERS);
      if (users.length === 0 || this.#failedServers.take(server) > 0) continue;
      for (const u of users)
        this.suspect(u, "keys_query_failure", {
          token: who.token,
          why: `the homeserver listed ${server.slice(0, 100)} in failures`,
        });
    }
  }

  /** Count the suspicion and start (or join, or skip) a background check of the user. */
  suspect(userId: string, signal: Signal, o: { token?: string; why: string; tracker?: Requester }): void {
    const { metrics, resyncer, serverName } = this.#o;
    if (serverOf(userId) === serverName || !isValidUserId(userId)) return;
    metrics?.suspicions.inc({ signal });
    // The device that saw the signal hears of the outcome, like a device that queried the keys.
    if (o.tracker) this.#o.track(o.tracker, [userId]);
    const trigger =
      signal === "cross_signing_incomplete" || signal === "keys_query_failure" ? "keys_query" : "to_device";
    void resyncer.background(userId, { trigger, why: `${signal}: ${o.why}`, token: o.token }).then(
      (check) => this.#o.log.debug("suspicion", { userId, signal, check }),
      (e) => this.#o.log.debug("suspicion not checked", { userId, signal, error: String((e as Error)?.message ?? e) }),
    );
  }
}
