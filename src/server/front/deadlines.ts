// Deadlines for the wait on a response head, checked by one coarse timer: a timer per request
// (set, then cleared when the head arrives) costs more than the rest of a small request's JS.
// A deadline fires up to one tick late, which a 60 s header timeout does not notice. Held
// long-polls keep thousands of far deadlines pending: a tick only walks them when the earliest
// one is due, so idle polls cost no CPU (docs/performance.md, idle long-polls).
//
// The table is a plain array whose slot each owner remembers, not a Map keyed by owner. With a
// Map, a young-generation collection kept every request's objects alive until the next full
// one (promoting ~5 MB per collection under load, and making each take 7 ms instead of 1 ms):
// a Map that churns keys evidently still reaches them from its storage. Here a cancelled slot
// holds `undefined`, so nothing past is reachable from the table.

export interface Expiring {
  expire(): void;
  /** This owner's slot in the table, -1 when it has no deadline: deadlines.ts keeps it. */
  deadlineSlot: number;
}

const TICK_MS = 100;
let owners: (Expiring | undefined)[] = [];
let dueAt: number[] = [];
let live = 0;
let timer: ReturnType<typeof setInterval> | undefined;
/** No deadline is due before this (a cancelled one may make it early: then a walk finds none). */
let earliest = Infinity;

function tick(): void {
  const now = performance.now();
  if (now >= earliest) {
    earliest = Infinity;
    for (let i = 0; i < owners.length; i++) {
      const x = owners[i];
      if (x === undefined) continue;
      const at = dueAt[i]!;
      if (at > now) {
        if (at < earliest) earliest = at;
        continue;
      }
      cancelExpiry(x);
      try {
        x.expire();
      } catch {
        // One failing owner must not leave the later deadlines unwalked.
      }
    }
  }
  // Cancelled slots are dropped once they outnumber the live ones: a steady stream of requests
  // costs a copy of the live deadlines now and then, idle long-polls nothing.
  if (owners.length > 2 * live + 64) compact();
  // Stopped here rather than on the last cancel, so a steady stream of requests does not
  // start and stop the timer for each one.
  if (live === 0 && timer !== undefined) {
    clearInterval(timer);
    timer = undefined;
  }
}

function compact(): void {
  const keptOwners: Expiring[] = [], keptAt: number[] = [];
  for (let i = 0; i < owners.length; i++) {
    const x = owners[i];
    if (x === undefined) continue;
    x.deadlineSlot = keptOwners.length;
    keptOwners.push(x);
    keptAt.push(dueAt[i]!);
  }
  owners = keptOwners;
  dueAt = keptAt;
}

export function expireIn(x: Expiring, ms: number): void {
  const at = performance.now() + ms;
  if (x.deadlineSlot >= 0 && owners[x.deadlineSlot] === x) dueAt[x.deadlineSlot] = at;
  else {
    x.deadlineSlot = owners.length;
    owners.push(x);
    dueAt.push(at);
    live++;
  }
  if (at < earliest) earliest = at;
  if (timer === undefined) {
    timer = setInterval(tick, TICK_MS);
    // Pending deadlines alone never keep the process alive: their sockets do.
    (timer as { unref?: () => void }).unref?.();
  }
}

export function cancelExpiry(x: Expiring): void {
  const i = x.deadlineSlot;
  if (i < 0 || owners[i] !== x) return;
  owners[i] = undefined;
  x.deadlineSlot = -1;
  live--;
}
