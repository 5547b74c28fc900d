// The cross-replica bus: PostgreSQL LISTEN/NOTIFY on one channel (PostgreSQL docs, "NOTIFY").
// A notification is delivered only to sessions listening at commit time, and at most 8000 bytes
// of payload each: messages carry ids, batched into as few notifications as fit, one statement
// per flush. The listening session is our own connection so that we see it close: the postgres
// package re-issues LISTEN once after a close, and gives up for good if the server is still
// down then; here LISTEN is retried until it succeeds, and each resubscription is reported, since
// whatever was sent meanwhile was missed. A session can also die unheard (PostgreSQL restarted
// or failed over and no FIN or RST reached us): the bus would then be deaf until TCP keep-alive
// gave up, many minutes later. So the session is probed; an unanswered probe is cancelled, and
// the client closes a session whose cancel goes unanswered too (postgres 4's cancel_timeout),
// which ends up in closed() like any other loss (docs/scaling.md, "When something fails").
import type postgres from "postgres";
import type { Logger } from "../observe/log.ts";

/** A message on the wire: who sent it (to skip our own), its kind, its ids. */
export interface Wire {
  o: string;
  k: string;
  i?: string[];
}

// How often the listening session is probed, and how long a probe or a LISTEN may take before
// it is cancelled. Detection takes at most PROBE_MS + ANSWER_MS + the client's cancel_timeout (5 s).
const PROBE_MS = 5_000;
const ANSWER_MS = 2_000;

// Below NOTIFY's 8000-byte limit, with room for the envelope.
const MAX_PAYLOAD = 7_800;

/** Messages packed into as few payloads as fit; a kind's ids may be split over several. */
export function pack(origin: string, batch: Map<string, Set<string> | undefined>): string[] {
  const out: string[] = [];
  for (const [k, ids] of batch) {
    const head = JSON.stringify({ o: origin, k, i: [] }).length;
    if (!ids) {
      out.push(JSON.stringify({ o: origin, k }));
      continue;
    }
    let cur: string[] = [];
    let size = head;
    for (const id of ids) {
      const n = JSON.stringify(id).length + 1;
      if (n + head > MAX_PAYLOAD) continue; // an id this long is not one of ours (ids are ≤ 255)
      if (size + n > MAX_PAYLOAD && cur.length > 0) {
        out.push(JSON.stringify({ o: origin, k, i: cur }));
        cur = [];
        size = head;
      }
      cur.push(id);
      size += n;
    }
    if (cur.length > 0) out.push(JSON.stringify({ o: origin, k, i: cur }));
  }
  return out;
}

export interface BusOptions {
  /** The listening session: a postgres instance with max 1, no idle timeout or lifetime. */
  listenSql: postgres.Sql;
  /** Statements (the notifications go through the pool). */
  sql: postgres.Sql;
  channel: string;
  origin: string;
  log: Logger;
  onMessage: (w: Wire) => void;
  /** LISTEN was re-established after a loss. */
  onResubscribed: () => void;
}

export class PgBus {
  readonly #o: BusOptions;
  // Ids queued per kind (undefined: a kind without ids), sent together on the next turn.
  #batch = new Map<string, Set<string> | undefined>();
  #flushing: Promise<void> | undefined;
  #lostSends = false;
  #closed = false;
  #listening = false;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #prober: ReturnType<typeof setInterval> | undefined;
  #probing = false;
  #lastWarn = -Infinity;

  constructor(o: BusOptions) {
    this.#o = o;
  }

  /** The first LISTEN: failing here fails the start. */
  async start(): Promise<void> {
    // No deadline of ours here: the session is new (the client's connect_timeout applies).
    await this.#o.listenSql.unsafe(`LISTEN ${quoteIdent(this.#o.channel)}`);
    this.#listening = true;
    this.#prober = setInterval(() => void this.#probe(), PROBE_MS);
    this.#prober.unref?.();
  }

  /** LISTEN again, cancelled if not answered in time, so that the loop cannot stall on it. */
  #listen(): Promise<unknown> {
    return this.#o.listenSql.unsafe(`LISTEN ${quoteIdent(this.#o.channel)}`).signal(AbortSignal.timeout(ANSWER_MS));
  }

  /** A statement on the listening session: one that dies unheard gets closed (see the top). */
  async #probe(): Promise<void> {
    if (this.#closed || !this.#listening || this.#probing) return;
    this.#probing = true;
    try {
      await this.#o.listenSql`SELECT 1`.signal(AbortSignal.timeout(ANSWER_MS));
    } catch {
      // A lost session is reported by closed(); a slow answer alone changes nothing.
    } finally {
      this.#probing = false;
    }
  }

  /** Called by the listening session's onnotify. */
  notified(channel: string, payload: string): void {
    if (channel !== this.#o.channel) return;
    let w: Wire;
    try {
      w = JSON.parse(payload) as Wire;
    } catch {
      return; // not one of ours
    }
    if (typeof w.k !== "string") return;
    this.#o.onMessage(w);
  }

  /** Called by the listening session's onclose: listen again until it works. */
  closed(): void {
    if (this.#closed || !this.#listening) return;
    this.#listening = false;
    this.#warn("the cluster bus lost its PostgreSQL session; listening again when it returns");
    this.#relisten(100);
  }

  #relisten(delay: number): void {
    clearTimeout(this.#retry);
    this.#retry = setTimeout(async () => {
      if (this.#closed || this.#listening) return;
      try {
        await this.#listen();
        this.#listening = true;
        this.#o.log.info("the cluster bus is listening again; re-checking everything pending");
        this.#o.onResubscribed();
      } catch {
        this.#relisten(Math.min(delay * 2, 1_000));
      }
    }, delay);
    this.#retry.unref?.();
  }

  get listening(): boolean {
    return this.#listening;
  }

  /** Queue ids of a kind for the next flush (this turn's messages leave together). */
  send(kind: string, ids?: Iterable<string>): void {
    if (this.#closed) return;
    const had = this.#batch.has(kind);
    if (ids === undefined) this.#batch.set(kind, undefined);
    else {
      let set = this.#batch.get(kind);
      if (!set) this.#batch.set(kind, (set = new Set()));
      for (const id of ids) set.add(id);
    }
    if (!had && this.#batch.size === 1) queueMicrotask(() => void this.flush());
  }

  /** Send what is queued now (tests and close wait on it). */
  async flush(): Promise<void> {
    while (this.#flushing) await this.#flushing;
    if (this.#batch.size === 0) return;
    const batch = this.#batch;
    this.#batch = new Map();
    if (this.#lostSends) batch.set("r", undefined); // the others missed something of ours
    const payloads = pack(this.#o.origin, batch);
    this.#flushing = (async () => {
      try {
        await this.#o.sql`SELECT pg_notify(${this.#o.channel}, p) FROM unnest(${payloads}::text[]) AS p`;
        this.#lostSends = false;
      } catch (e) {
        this.#lostSends = true;
        this.#warn("the cluster bus could not notify the other replicas", e);
      } finally {
        this.#flushing = undefined;
      }
    })();
    await this.#flushing;
  }

  #warn(msg: string, e?: unknown): void {
    const now = Date.now();
    if (now - this.#lastWarn < 10_000) return;
    this.#lastWarn = now;
    this.#o.log.warn(msg, e === undefined ? undefined : { error: String((e as Error)?.message ?? e) });
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#retry);
    clearInterval(this.#prober);
  }
}

export const quoteIdent = (s: string) => `"${s.replace(/"/g, '""')}"`;
