// The cluster bus's LISTEN session after PostgreSQL restarts (docs/scaling.md, "When something
// fails"): whichever way its session ends, the bus listens again and says so, and messages
// between replicas flow again. Replica A reaches the server through a loopback relay standing
// for the network between them; replica B connects directly.
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import postgres from "postgres";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ClusterEvent } from "../../src/cluster/cluster.ts";
import { PgCluster } from "../../src/cluster/pg-cluster.ts";
import { createLogger } from "../../src/observe/log.ts";
import { startPostgres, type TestPostgres } from "../helpers/postgres.ts";

const log = createLogger("error", () => {});
let pg: TestPostgres;
let n = 0;
const open: PgCluster[] = [];
let relay: Relay | undefined;

beforeAll(async () => {
  pg = await startPostgres();
}, 60_000);
afterAll(async () => {
  await pg?.close();
}, 30_000);
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close().catch(() => {})));
  await relay?.close();
  relay = undefined;
});

interface Relay {
  port: number;
  /**
   * The sessions open now go silent: nothing more passes either way and nothing closes them
   * (as after a failover or a host restart, when no FIN or RST reaches the replica). New
   * sessions pass.
   */
  freeze(): void;
  close(): Promise<void>;
}

async function startRelay(to: number): Promise<Relay> {
  const pairs = new Set<{ a: Socket; b: Socket; frozen: boolean }>();
  const server: Server = createServer((a) => {
    const b = tcpConnect(to, "127.0.0.1");
    const pair = { a, b, frozen: false };
    pairs.add(pair);
    a.on("data", (d) => void (pair.frozen || b.write(d)));
    b.on("data", (d) => void (pair.frozen || a.write(d)));
    a.on("close", () => void (pair.frozen || b.destroy()));
    b.on("close", () => void (pair.frozen || a.destroy()));
    a.on("error", () => {});
    b.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as { port: number }).port,
    freeze: () => {
      for (const p of pairs) p.frozen = true;
    },
    close: async () => {
      for (const p of pairs) p.a.destroy(), p.b.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

function events(c: PgCluster): ClusterEvent[] {
  const seen: ClusterEvent[] = [];
  c.subscribe((e) => seen.push(e));
  return seen;
}

async function until(cond: () => boolean, ms: number, act?: () => void): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms`);
    act?.();
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A (through the relay) and B (direct) on a fresh database. */
async function pair(): Promise<{ a: PgCluster; b: PgCluster; atA: ClusterEvent[] }> {
  const url = await pg.createDatabase(`bus_${++n}`);
  relay = await startRelay(pg.port);
  const a = await PgCluster.open({ url: url.replace(`:${pg.port}/`, `:${relay.port}/`), log });
  open.push(a);
  const b = await PgCluster.open({ url, log });
  open.push(b);
  const atA = events(a);
  // Both listen: a message of B reaches A.
  b.publish({ kind: "snapshots", users: ["@before:remote"] });
  await until(() => atA.some((e) => e.kind === "snapshots"), 10_000);
  return { a, b, atA };
}

/** B publishes until A hears it (a notification is lost while A does not listen). */
async function heardAgain(a: PgCluster, b: PgCluster, atA: ClusterEvent[], ms: number): Promise<void> {
  const mark = atA.length;
  await until(
    () => atA.slice(mark).some((e) => e.kind === "snapshots" && e.users.includes("@after:remote")),
    ms,
    () => b.publish({ kind: "snapshots", users: ["@after:remote"] }),
  );
  expect(a.listening).toBe(true);
}

describe("the bus listens again after PostgreSQL restarts", () => {
  it("when its session is terminated (pg_terminate_backend)", async () => {
    const { a, b, atA } = await pair();
    const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
    try {
      const killed = await sql`SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
        WHERE application_name = ${`mrp-bus ${a.holder}`.slice(0, 63)}`;
      expect(killed.map((r) => r.ok)).toEqual([true]);
    } finally {
      await sql.end({ timeout: 0 });
    }
    await until(() => atA.some((e) => e.kind === "resubscribed"), 15_000);
    await heardAgain(a, b, atA, 15_000);
  }, 60_000);

  it("when PostgreSQL restarts at once", async () => {
    const { a, b, atA } = await pair();
    await pg.restart();
    await until(() => atA.some((e) => e.kind === "resubscribed"), 15_000);
    await heardAgain(a, b, atA, 15_000);
  }, 60_000);

  it("when PostgreSQL restarts twice in a row, the second time while the bus is listening again", async () => {
    const { a, b, atA } = await pair();
    await pg.restart();
    await new Promise((r) => setTimeout(r, 150)); // the first attempt to listen again is under way
    await pg.restart();
    await until(() => atA.some((e) => e.kind === "resubscribed"), 15_000);
    await heardAgain(a, b, atA, 15_000);
  }, 60_000);

  it("when PostgreSQL restarts and the replica never hears its session end (no FIN or RST)", async () => {
    const { a, b, atA } = await pair();
    relay!.freeze();
    await pg.restart();
    // The bus finds its session silent by itself (a probe unanswered, then its cancel unanswered).
    await until(() => atA.some((e) => e.kind === "resubscribed"), 30_000);
    await heardAgain(a, b, atA, 15_000);
  }, 60_000);
});
