// Deadlines for the wait on a response head, checked by one coarse timer: a timer per request
// (set, then cleared when the head arrives) costs more than the rest of a small request's JS.
// A deadline fires up to one tick late, which a 60 s header timeout does not notice. Held
// long-polls keep thousands of far deadlines pending: a tick only walks them when the earliest
// one is due, so idle polls cost no CPU (docs/performance.md, idle long-polls). The pending
// ones are a SlotSet, not a Map keyed by owner (slots.ts says why).
import { SlotSet, type Slotted } from "./slots.ts";

export interface Expiring extends Slotted {
  expire(): void;
  /** When it is due (performance.now() ms): deadlines.ts keeps it. */
  deadlineAt: number;
}

const TICK_MS = 100;
const pending = new SlotSet<Expiring>();
let timer: ReturnType<typeof setInterval> | undefined;
/** No deadline is due before this (a cancelled one may make it early: then a walk finds none). */
let earliest = Infinity;

function tick(): void {
  const now = performance.now();
  if (now >= earliest) {
    earliest = Infinity;
    pending.forEach((x) => {
      if (x.deadlineAt > now) {
        if (x.deadlineAt < earliest) earliest = x.deadlineAt;
        return;
      }
      pending.delete(x);
      try {
        x.expire();
      } catch {
        // One failing owner must not leave the later deadlines unwalked.
      }
    });
  }
  // Stopped here rather than on the last cancel, so a steady stream of requests does not
  // start and stop the timer for each one.
  if (pending.size === 0 && timer !== undefined) {
    clearInterval(timer);
    timer = undefined;
  }
}

export function expireIn(x: Expiring, ms: number): void {
  x.deadlineAt = performance.now() + ms;
  pending.add(x);
  if (x.deadlineAt < earliest) earliest = x.deadlineAt;
  if (timer === undefined) {
    timer = setInterval(tick, TICK_MS);
    // Pending deadlines alone never keep the process alive: their sockets do.
    (timer as { unref?: () => void }).unref?.();
  }
}

export function cancelExpiry(x: Expiring): void {
  pending.delete(x);
}
