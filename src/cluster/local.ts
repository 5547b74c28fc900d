// One process (the SQLite store): the local mechanisms are the whole truth. The Resyncer's
// in-flight map is the single flight, the federation transport caps each destination, and
// delivery wakes its own long-polls; nothing here costs a hot path anything.
import type { Cluster, ClusterEvent, Landed } from "./cluster.ts";

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

  publish(_e: ClusterEvent): void {}

  subscribe(_fn: (e: ClusterEvent) => void): () => void {
    return () => {};
  }

  async close(): Promise<void> {}
}
