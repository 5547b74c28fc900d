// One process (the SQLite store): the local mechanisms are the whole truth. The Resyncer's
// in-flight map is the single flight, the federation transport caps each destination, and
// delivery wakes its own long-polls; nothing here costs a hot path anything.
import type { Cluster, ClusterEvent, Landed, SharedLease } from "./cluster.ts";

export class LocalCluster implements Cluster {
  readonly shared = false;

  limiter(): undefined {
    return undefined;
  }

  flight(_key: string, run: () => Promise<Landed>): Promise<Landed> {
    return run();
  }

  peek(): Promise<undefined> {
    return Promise.resolve(undefined);
  }

  slot(): Promise<() => void> {
    return Promise.resolve(() => {});
  }

  lease(): SharedLease {
    return new LocalLease();
  }

  publish(_e: ClusterEvent): void {}

  subscribe(_fn: (e: ClusterEvent) => void): () => void {
    return () => {};
  }

  async close(): Promise<void> {}
}

/** The only process holds every lease; its state lives as long as the process. */
export class LocalLease implements SharedLease {
  readonly claimEveryMs = Number.POSITIVE_INFINITY;
  #state: string | null = null;

  claim(): Promise<{ state: string | null }> {
    return Promise.resolve({ state: this.#state });
  }

  save(state: string): Promise<boolean> {
    this.#state = state;
    return Promise.resolve(true);
  }

  release(): Promise<void> {
    return Promise.resolve();
  }
}
