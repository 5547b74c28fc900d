// Waiters for the cluster's internal notifications ("l": a flight landed, "s": a slot freed),
// by kind and id. Registered before the read that decides to wait, so a notification arriving
// in between is not missed (cluster/pg-flight.ts, pg-slots.ts).
export interface Watch {
  /** Resolves on the notification (at once if it came already), or after `ms`. */
  wait(ms: number): Promise<void>;
  cancel(): void;
}

export class Watches {
  readonly #byKey = new Map<string, Set<() => void>>();

  watch(kind: string, id: string): Watch {
    const key = `${kind}|${id}`;
    let fired = false;
    let resolve: (() => void) | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const wake = () => {
      fired = true;
      resolve?.();
    };
    let set = this.#byKey.get(key);
    if (!set) this.#byKey.set(key, (set = new Set()));
    set.add(wake);
    const cancel = () => {
      clearTimeout(timer);
      const s = this.#byKey.get(key);
      if (s?.delete(wake) && s.size === 0) this.#byKey.delete(key);
    };
    return {
      wait: (ms) =>
        fired
          ? Promise.resolve()
          : new Promise<void>((r) => {
              resolve = r;
              timer = setTimeout(r, ms);
            }),
      cancel,
    };
  }

  /** A notification of `kind` for these ids arrived. */
  notified(kind: string, ids: readonly string[]): void {
    for (const id of ids) for (const wake of this.#byKey.get(`${kind}|${id}`) ?? []) wake();
  }

  /** Notifications may have been missed (the bus resubscribed): every waiter looks again. */
  wakeAll(): void {
    for (const wake of [...this.#byKey.values()].flatMap((s) => [...s])) wake();
  }
}
