// Long-polls waiting per device. A refresh that lands for a device with a /sync waiting
// answers that /sync at once instead of when the homeserver's timeout ends.

export const deviceKey = (userId: string, deviceId: string) => `${userId}|${deviceId}`;

export interface Waiter {
  wake(): void;
}

export class Waiters {
  // Nearly every device has one poll at a time: a Set for each would be most of the memory a
  // held poll costs here, so a lone waiter is stored as itself. A device whose poll ended keeps
  // its entry, set to undefined, until such entries outnumber the polls: deleting from a Map
  // on every poll would keep each ended poll's objects for young collections (slots.ts).
  readonly #byDevice = new Map<string, Waiter | Set<Waiter> | undefined>();
  #count = 0;
  #wakes = 0;

  get count(): number {
    return this.#count;
  }

  /** Calls of wake() so far: a poll planned before a wake and held after it looks again. */
  get wakes(): number {
    return this.#wakes;
  }

  add(key: string, w: Waiter): void {
    const cur = this.#byDevice.get(key);
    if (cur === w || (cur instanceof Set && cur.has(w))) return;
    if (cur === undefined) this.#byDevice.set(key, w);
    else if (cur instanceof Set) cur.add(w);
    else this.#byDevice.set(key, new Set([cur, w]));
    this.#count++;
  }

  remove(key: string, w: Waiter): void {
    const cur = this.#byDevice.get(key);
    if (cur === w) this.#byDevice.set(key, undefined);
    else if (cur instanceof Set && cur.delete(w)) {
      if (cur.size === 0) this.#byDevice.set(key, undefined);
    } else return;
    this.#count--;
    if (this.#byDevice.size > 2 * this.#count + 1024) {
      for (const [k, v] of this.#byDevice) if (v === undefined) this.#byDevice.delete(k);
    }
  }

  /** Is a long-poll of this device held here? */
  has(key: string): boolean {
    return this.#byDevice.get(key) !== undefined;
  }

  /**
   * Wake every long-poll (another replica's news may have been missed: cluster/pg-bus.ts); each
   * answers at once at its own position, carrying whatever is pending, and the client polls again.
   */
  wakeAll(): number {
    return this.wake([...this.#byDevice.keys()]);
  }

  /** Wake every long-poll of these devices; returns how many were woken. */
  wake(keys: Iterable<string>): number {
    this.#wakes++;
    let n = 0;
    for (const k of keys) {
      const cur = this.#byDevice.get(k);
      if (cur === undefined) continue;
      for (const w of cur instanceof Set ? [...cur] : [cur]) {
        w.wake();
        n++;
      }
    }
    return n;
  }
}
