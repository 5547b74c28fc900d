// Only real changes reach clients (docs/architecture.md "Self-healing"): a fresh federation list
// is delivered (overlay, injection, wake) only when it differs from what clients were shown: the
// overlay we serve for the user, or else the homeserver's own answer (delivery/views.ts). Every
// delivery is a heal: counted by trigger, logged once with what changed and why, and kept in a
// short list for the admin API.
import type { Delivery } from "../delivery/delivery.ts";
import type { HsView } from "../matrix/device.ts";
import { describeDiff, diffView, isEmptyDiff, viewOfSnapshot } from "../delivery/hs-view.ts";
import type { Overlays } from "../delivery/overlays.ts";
import type { Views } from "../delivery/views.ts";
import type { Logger } from "../observe/log.ts";
import type { Metrics } from "../observe/metrics.ts";
import type { DeviceSnapshot } from "../matrix/device.ts";
import type { Store } from "../store/store.ts";
import type { ResyncContext } from "./resync-types.ts";

export interface HealRecord {
  user_id: string;
  trigger: string;
  why?: string;
  changes: string;
  at: number;
}

export interface HealerOptions {
  store: Store;
  views: Views;
  overlays: Overlays;
  delivery: Delivery;
  log: Logger;
  metrics?: Metrics;
  /** How many heals the admin API lists. */
  keep?: number;
  now?: () => number;
}

/**
 * A user the homeserver reported changed this recently has a list in motion there: a login and
 * the new device's key upload are two device-list updates over federation, some time apart.
 */
const IN_MOTION_MS = 5_000;

export class Healer {
  readonly #o: HealerOptions;
  readonly #now: () => number;
  readonly #recent: HealRecord[] = [];

  constructor(o: HealerOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
  }

  /** The last heals, newest first. */
  recent(): HealRecord[] {
    return [...this.#recent].reverse();
  }

  /** A validated fresh list: deliver it when it is a real change; true when it was delivered. */
  async onFresh(s: DeviceSnapshot, ctx: ResyncContext): Promise<boolean> {
    const { store, views, overlays, delivery, metrics } = this.#o;
    // An answer of the homeserver that clients have been shown may still be being read (resync/
    // self-heal.ts): the comparison below must be with it, not with the answer before it.
    await views.settled(s.userId);
    const served = await store.getSnapshot(s.userId); // the overlay clients are being shown, if any
    let view = await views.getOrQuery(s.userId, ctx.token, { keep: !ctx.walk });
    if (!served && view && (await views.behind(s.userId))) {
      // The homeserver named this user in a device_lists.changed since we read its answer: it
      // knows something our record lacks, and its clients re-query on its word. Compare with
      // its answer now; with no token to ask for it, leave it to them (the next check will see
      // what they were given).
      if (!ctx.token) {
        this.#o.log.debug("fresh list not compared: the homeserver reported a change our record lacks", {
          userId: s.userId,
          trigger: ctx.trigger,
        });
        metrics?.freshLists.inc({ outcome: "unchanged" });
        return false;
      }
      view = (await views.query(s.userId, ctx.token)) ?? view;
    }
    const shown: HsView | undefined = served ? viewOfSnapshot(served) : view;
    if (shown) {
      const diff = diffView(shown, s);
      if (isEmptyDiff(diff)) {
        // Nothing new for clients. An overlay still being served stays fresh for its max age.
        if (served) {
          await store.putSnapshot(s);
          overlays.noteSnapshot(s);
        }
        metrics?.freshLists.inc({ outcome: "unchanged" });
        return false;
      }
      if (ctx.walk && !served && views.reportedWithin(s.userId, IN_MOTION_MS)) {
        // The audit is for silent staleness. This homeserver is hearing of the user's changes and
        // tells clients itself; a remote change it lacks is most likely still on its way over
        // federation. The next pass decides, if the difference is still there.
        this.#o.log.debug("fresh list not delivered: the homeserver reported the user a moment ago", {
          userId: s.userId,
          trigger: ctx.trigger,
        });
        metrics?.freshLists.inc({ outcome: "unchanged" });
        return false;
      }
      const backToHomeserver = served !== undefined && view !== undefined && isEmptyDiff(diffView(view, s));
      if (backToHomeserver) {
        // The remote now says what the homeserver says: the overlay steps aside, and clients are
        // told to look again (they were shown the overlay, which differs).
        await overlays.caughtUp([s.userId]);
      } else {
        await store.putSnapshot(s);
        overlays.noteSnapshot(s);
      }
      await delivery.onSnapshot(s);
      this.#record(s.userId, ctx, describeDiff(diff));
      return true;
    }
    // No record at all of what the homeserver served for this user, and no token to ask it
    // with: deliver, as before there was a view (a spurious "changed" costs a client one query;
    // a missed change leaves it unable to decrypt).
    await store.putSnapshot(s);
    overlays.noteSnapshot(s);
    await delivery.onSnapshot(s);
    this.#record(
      s.userId,
      ctx,
      `${Object.keys(s.devices).length} devices; no record of the homeserver's answer to compare with`,
    );
    return true;
  }

  #record(userId: string, ctx: ResyncContext, changes: string): void {
    const { metrics, log } = this.#o;
    metrics?.freshLists.inc({ outcome: "changed" });
    metrics?.heals.inc({ trigger: ctx.trigger });
    const rec: HealRecord = { user_id: userId, trigger: ctx.trigger, changes, at: this.#now() };
    if (ctx.why) rec.why = ctx.why;
    this.#recent.push(rec);
    if (this.#recent.length > (this.#o.keep ?? 100)) this.#recent.shift();
    log.info("device list healed", { userId, changes, trigger: ctx.trigger, why: ctx.why });
  }
}
