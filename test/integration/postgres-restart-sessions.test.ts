// After a PostgreSQL restart, the sessions that had a statement in flight when the server went
// down must not fail the calls made once it is back (docs/scaling.md, "When something fails"): postgres
// 3.4.9 keeps such a session's error and hands it to the first statement of its next connection
// (57P01 "terminating connection due to administrator command"), which then never returns to
// the pool. Both the store's pool (through the guard, as the request paths use it) and the
// cluster's pools (a rate-limit take per refresh) replace such a pool and send the statement again.
// A transaction whose session dies under a statement (the backend terminated, or PostgreSQL
// stopped): postgres 3.4.9 then wrote its ROLLBACK to the closed session and threw a TypeError
// from a timer of its own (an uncaught exception, `socket.write` of null), and that session
// never connected again; no fault may escape, and the next calls are answered.
import postgres from "postgres";
import { afterAll, afterEach, beforeAll, beforeEach, expect, test } from "vitest";
import { PgCluster } from "../../src/cluster/pg-cluster.ts";
import { createLogger } from "../../src/observe/log.ts";
import { openPostgresStore } from "../../src/store/postgres.ts";
import { guardStore } from "../../src/store/store-guard.ts";
import { startPostgres, type TestPostgres } from "../helpers/postgres.ts";

let pg: TestPostgres;
let url: string;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = createLogger("error", () => {});

beforeAll(async () => {
  pg = await startPostgres();
  url = await pg.createDatabase("restart_sessions");
}, 60_000);
afterAll(() => pg?.close(), 30_000);

// Faults no caller can catch (thrown from the client's timers and sockets) fail the test.
let faults: string[] = [];
const onFault = (e: unknown) => void faults.push(e instanceof Error ? (e.stack ?? e.message) : String(e));
beforeEach(() => {
  faults = [];
  process.on("uncaughtException", onFault);
  process.on("unhandledRejection", onFault);
});
afterEach(() => {
  process.off("uncaughtException", onFault);
  process.off("unhandledRejection", onFault);
});

/**
 * Holds `table` locked from another session, runs `inFlight` (whose statements then wait on the
 * lock, in flight on their sessions), and restarts PostgreSQL under them.
 */
async function restartUnder(table: string, inFlight: () => Promise<unknown>[]): Promise<void> {
  const locker = postgres(url, { max: 1, onnotice: () => {} });
  const held = await locker.reserve();
  await held`BEGIN`;
  await held.unsafe(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
  const calls = inFlight().map((p) => p.catch(() => {}));
  await sleep(300); // the statements reach the server and wait on the lock
  await pg.stop();
  await Promise.all(calls);
  await locker.end({ timeout: 0 }).catch(() => {});
  await sleep(300);
  await pg.start();
}

test("store: every call after the restart is answered (none fails with the session's old error)", async () => {
  const raw = await openPostgresStore(url, { max: 1 });
  // No cool-down: what is under test is the calls after the restart, not the refusals during it.
  const store = guardStore(raw, { log, deadlineMs: 5_000, coolDownMs: 0 });
  try {
    await store.countViews(); // its session is open
    await restartUnder("hs_views", () => [store.countViews()]);
    const outcomes: string[] = [];
    for (let i = 0; i < 6; i++)
      outcomes.push(
        await store.countViews().then(
          (n) => `ok ${n}`,
          (e: Error) => e.message,
        ),
      );
    expect(outcomes).toEqual(Array(6).fill("ok 0"));
  } finally {
    await store.close();
  }
}, 60_000);

test("cluster: every rate-limit take after the restart is answered", async () => {
  const c = await PgCluster.open({ url, log, poolSize: 1, deadlineMs: 5_000 });
  try {
    const lim = c.limiter("restart", { burst: 1000, perSecond: 1000 });
    await lim.take("warm");
    await restartUnder("cluster_buckets", () => [lim.take("held")]);
    const outcomes: string[] = [];
    for (let i = 0; i < 6; i++)
      outcomes.push(
        await lim.take(`after${i}`).then(
          () => "ok",
          (e: Error) => e.message,
        ),
      );
    expect(outcomes).toEqual(Array(6).fill("ok"));
  } finally {
    await c.close();
  }
}, 60_000);

// On the store alone (the client's own recovery) and through the guard, as the request paths use it.
test.each([
  ["its session is terminated (pg_terminate_backend)", "alone", "terminate"],
  ["its session is terminated (pg_terminate_backend)", "guarded", "terminate"],
  ["PostgreSQL stops", "alone", "stop"],
  ["PostgreSQL stops", "guarded", "stop"],
])(
  "store: a transaction in flight when %s fails as a call; nothing escapes, the next calls are answered (%s)",
  async (_w, layer, how) => {
    const raw = await openPostgresStore(url, { max: 1 });
    const store = layer === "guarded" ? guardStore(raw, { log, deadlineMs: 5_000, coolDownMs: 0 }) : raw;
    const admin = postgres(url, { max: 1, onnotice: () => {} });
    try {
      await store.countViews(); // its session is open
      const locker = postgres(url, { max: 1, onnotice: () => {} });
      const held = await locker.reserve();
      await held`BEGIN`;
      await held`LOCK TABLE trackers IN ACCESS EXCLUSIVE MODE`;
      // track() is a transaction (BEGIN, UPDATE, INSERT, COMMIT): its UPDATE waits on the lock.
      const call = store.track("@a:hs.test", "DEV", ["@t:remote.test"], 1).then(
        () => "ok",
        () => "failed",
      );
      await sleep(300);
      if (how === "terminate") {
        const killed = await admin`SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
        WHERE application_name = 'matrix-resync-proxy' AND wait_event_type = 'Lock'`;
        expect(killed.map((r) => r.ok)).toEqual([true]);
        await locker.end({ timeout: 0 });
        expect(["ok", "failed"]).toContain(await call);
      } else {
        await pg.stop();
        expect(await call).toBe("failed");
        await locker.end({ timeout: 0 }).catch(() => {});
        await pg.start();
      }
      await sleep(300); // whatever the client scheduled on the dead session has run
      const outcomes: string[] = [];
      for (let i = 0; i < 4; i++)
        outcomes.push(
          await store.countViews().then(
            (n) => `ok ${n}`,
            (e: Error) => e.message,
          ),
        );
      expect(outcomes).toEqual(Array(4).fill("ok 0"));
      expect(faults).toEqual([]);
    } finally {
      await admin.end({ timeout: 0 }).catch(() => {});
      await store.close();
    }
  },
  60_000,
);
