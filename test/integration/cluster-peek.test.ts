// Cluster.peek against a real PostgreSQL (src/cluster/pg-peek.ts): what another replica's fetch
// left, read without taking part, so a replica answers a refresh as the one that fetched would
// (resync/resyncer.ts); and a storm's peeks cost a few statements, not one each.
import postgres from "postgres";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import { PgCluster } from "../../src/cluster/pg-cluster.ts";
import { createLogger } from "../../src/observe/log.ts";
import { startPostgres, type TestPostgres } from "../helpers/postgres.ts";

const log = createLogger("error", () => {});
let pg: TestPostgres;
let n = 0;
const open: PgCluster[] = [];

beforeAll(async () => {
  pg = await startPostgres();
});
afterAll(async () => {
  await pg?.close();
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close().catch(() => {})));
});

async function replicas(count: number): Promise<{ url: string; rs: PgCluster[] }> {
  const url = await pg.createDatabase(`peek_${++n}`);
  const rs: PgCluster[] = [];
  for (let i = 0; i < count; i++) rs.push(await PgCluster.open({ url, log }));
  open.push(...rs);
  return { url, rs };
}

it("another replica's flight: running while its lease is held, its outcome within the window, nothing past it", async () => {
  const { rs } = await replicas(2);
  const [a, b] = rs as [PgCluster, PgCluster];
  expect(await b.peek("k", 60_000)).toBeUndefined();
  let land!: () => void;
  const landed = new Promise<void>((r) => (land = r));
  const flying = a.flight(
    "k",
    async () => {
      await landed;
      return { ok: true, result: "the list" };
    },
    0,
  );
  await expect.poll(() => b.peek("k", 60_000)).toBe("running");
  land();
  await flying;
  expect(await b.peek("k", 60_000)).toEqual({ ok: true, result: "the list" });
  await new Promise((r) => setTimeout(r, 30));
  expect(await b.peek("k", 10)).toBeUndefined();
  expect(await b.peek("other", 60_000)).toBeUndefined();
});

it("a storm's peeks on one replica are coalesced: 500 users at once cost a few statements", async () => {
  // A refresh storm of many users misses the cache together: a statement per peek queued on
  // the cluster's few sessions, ahead of the rate-limit takes.
  const { url, rs } = await replicas(1);
  const a = rs[0]!;
  await a.flight("@fan7:x", async () => ({ ok: true, result: "seven" }), 0);
  const stats = postgres(url, { max: 1, onnotice: () => {} });
  const commits = async () =>
    Number((await stats`SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`)[0]!.xact_commit);
  try {
    const before = await commits();
    const seen = await Promise.all(Array.from({ length: 500 }, (_, i) => a.peek(`@fan${i}:x`, 60_000)));
    // One key asked twice at once shares the read.
    const twice = await Promise.all([a.peek("@fan7:x", 60_000), a.peek("@fan7:x", 60_000)]);
    expect(seen.filter((x) => x !== undefined)).toEqual([{ ok: true, result: "seven" }]);
    expect(seen[7]).toEqual({ ok: true, result: "seven" });
    expect(twice).toEqual([seen[7], seen[7]]);
    await a.close();
    await new Promise((r) => setTimeout(r, 500));
    expect((await commits()) - before).toBeLessThan(100);
  } finally {
    await stats.end({ timeout: 1 });
  }
});
