// The cluster of a replica started while its database was down (src/cluster/late-cluster.ts):
// before the real cluster is handed over every coordination call fails as StoreUnavailable;
// afterwards each goes to the real one, and the subscribers hear `resubscribed`.
import { expect, test } from "vitest";
import type { Cluster, ClusterEvent, SharedLease } from "../../src/cluster/cluster.ts";
import { LateCluster } from "../../src/cluster/late-cluster.ts";
import { LocalCluster } from "../../src/cluster/local.ts";
import { StoreUnavailable } from "../../src/store/store-guard.ts";

test("the audit's lease fails as an outage until the cluster opens, then is the real one's", async () => {
  const late = new LateCluster();
  const heard: ClusterEvent[] = [];
  late.subscribe((e) => heard.push(e));
  const lease = late.lease("audit");
  await expect(lease.claim()).rejects.toBeInstanceOf(StoreUnavailable);
  await expect(lease.save("{}")).rejects.toBeInstanceOf(StoreUnavailable);
  await lease.release(); // nothing held: nothing to give up
  expect(lease.claimEveryMs).toBe(10_000);

  const asked: string[] = [];
  const real = new LocalCluster();
  const realLease = real.lease();
  const spy: SharedLease = {
    claim: () => (asked.push("claim"), realLease.claim()),
    save: (s) => (asked.push(`save ${s}`), realLease.save(s)),
    release: () => (asked.push("release"), realLease.release()),
    claimEveryMs: 1234,
  };
  await late.open(Object.assign(Object.create(real) as Cluster, { lease: () => spy }));
  expect(heard).toEqual([{ kind: "resubscribed" }]);
  expect(await lease.claim()).toEqual({ state: null });
  expect(await lease.save("place")).toBe(true);
  expect(lease.claimEveryMs).toBe(1234);
  await lease.release();
  expect(asked).toEqual(["claim", "save place", "release"]);
});
