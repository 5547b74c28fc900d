// Long-polls waiting per device. A refresh that lands for a device with a /sync waiting
// answers that /sync at once instead of when the homeserver's timeout ends.

export const deviceKey = (userId: string, deviceId: string) => `${userId}|${deviceId}`;

export interface Waiter {
  wake(): void;
}

export class Waiters {
  readonly #byDevice = new Map<string, Set<Waiter>>();
  #count = 0;

  get count(): number {
    return this.#count;
  }

  add(key: string, w: Waiter): void {
    let set = this.#byDevice.get(key);
    if (!set) this.#byDevice.set(key, (set = new Set()));
    if (set.has(w)) return;
    set.add(w);
    this.#count++;
  }

  remove(key: string, w: Waiter): void {
    const set = this.#byDevice.get(key);
    if (!set?.delete(w)) return;
    this.#count--;
    if (set.size === 0) this.#byDevice.delete(key);
  }

  /** Wake every long-poll of these devices; returns how many were woken. */
  wake(keys: Iterable<string>): number {
    let n = 0;
    for (const k of keys) {
      const set = this.#byDevice.get(k);
      if (!set) continue;
      for (const w of [...set]) {
        w.wake();
        n++;
      }
    }
    return n;
  }
}
