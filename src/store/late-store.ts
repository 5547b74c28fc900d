// The Store of a replica whose database was not reachable at start-up (commands/pg-start.ts):
// every call fails (StoreNotOpen, which the guard turns into StoreUnavailable, so requests go
// plain and refreshes answer 503, as in any outage) until the real store is handed over, and
// from then on goes to it.
import { PostgresStore } from "./postgres-store.ts";
import { StoreNotOpen } from "./store-guard.ts";
import type { Store } from "./store.ts";

export interface LateStore {
  /** What the guard wraps: the real store's methods, each waiting for it. */
  store: Store;
  /** Hands over the opened store. */
  open(real: Store): void;
  /** Why calls fail meanwhile (the last attempt's error), for /readyz. */
  failing(reason: string): void;
}

export function lateStore(): LateStore {
  let real: Store | undefined;
  let reason = "not connected yet";
  // guardStore wraps the methods it finds on the prototype: the same names as the real store's.
  class Late {}
  for (const name of Object.getOwnPropertyNames(PostgresStore.prototype)) {
    if (name === "constructor") continue;
    const d = Object.getOwnPropertyDescriptor(PostgresStore.prototype, name);
    if (typeof d?.value !== "function") continue;
    Object.defineProperty(Late.prototype, name, {
      value(...args: unknown[]) {
        if (real) return (real[name as keyof Store] as (...a: unknown[]) => unknown).apply(real, args);
        if (name === "close") return Promise.resolve();
        if (name === "recover") return false;
        return Promise.reject(new StoreNotOpen(`PostgreSQL is not reachable yet: ${reason}`));
      },
    });
  }
  return {
    store: new Late() as Store,
    open: (s) => void (real = s),
    failing: (r) => void (reason = r),
  };
}
