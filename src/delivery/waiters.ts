// Long-polls waiting per device. A refresh that lands for a device with a /sync waiting
// answers that /sync at once instead of when the homeserver's timeout ends.

export const deviceKey = (userId: string, deviceId: string) => `${userId}|${deviceId}`;

export class Waiters {
  readonly #byDevice = new Map<string, Set<() => void>>();
  #count = 0;

  get count(): number {
    return this.#count;
  }

  /** Register a wake callback; returns the function that unregisters it. */
  wait(key: string, wake: () => void): () => void {
    let set = this.#byDevice.get(key);
    if (!set) this.#byDevice.set(key, (set = new Set()));
    set.add(wake);
    this.#count++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#count--;
      set.delete(wake);
      if (set.size === 0) this.#byDevice.delete(key);
    };
  }

  /** Wake every long-poll of these devices; returns how many were woken. */
  wake(keys: Iterable<string>): number {
    let n = 0;
    for (const k of keys) {
      const set = this.#byDevice.get(k);
      if (!set) continue;
      for (const f of [...set]) {
        f();
        n++;
      }
    }
    return n;
  }
}
