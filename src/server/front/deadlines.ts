// Deadlines for the wait on a response head, checked by one coarse timer: a timer per request
// (set, then cleared when the head arrives) costs more than the rest of a small request's JS.
// A deadline fires up to one tick late, which a 60 s header timeout does not notice. Held
// long-polls keep thousands of far deadlines pending: a tick only walks them when the earliest
// one is due, so idle polls cost no CPU (docs/performance.md, idle long-polls).

export interface Expiring {
  expire(): void;
}

const TICK_MS = 100;
const due = new Map<Expiring, number>();
let timer: ReturnType<typeof setInterval> | undefined;
/** No deadline is due before this (a cancelled one may make it early: then a walk finds none). */
let earliest = Infinity;

function tick(): void {
  const now = performance.now();
  if (now < earliest) return;
  earliest = Infinity;
  for (const [x, at] of due) {
    if (at > now) {
      if (at < earliest) earliest = at;
      continue;
    }
    due.delete(x);
    try {
      x.expire();
    } catch {
      // One failing owner must not leave the later deadlines unwalked.
    }
  }
  // Stopped here rather than on the last delete, so a steady stream of requests does not
  // start and stop the timer for each one.
  if (due.size === 0 && timer !== undefined) {
    clearInterval(timer);
    timer = undefined;
  }
}

export function expireIn(x: Expiring, ms: number): void {
  const at = performance.now() + ms;
  due.set(x, at);
  if (at < earliest) earliest = at;
  if (timer === undefined) {
    timer = setInterval(tick, TICK_MS);
    // Pending deadlines alone never keep the process alive: their sockets do.
    (timer as { unref?: () => void }).unref?.();
  }
}

export function cancelExpiry(x: Expiring): void {
  due.delete(x);
}
