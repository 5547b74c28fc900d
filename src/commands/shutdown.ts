// Graceful stop of HTTP listeners: refuse new connections at once, let requests in flight
// (long-polls included) finish until a deadline, then cut whatever is left.
import type { Server } from "node:http";

export interface DrainOptions {
  deadlineMs: number;
  /** Other work to finish within the same deadline, e.g. federation fetches in flight. */
  busy?: () => boolean;
  pollMs?: number;
}

export interface DrainResult {
  /** False when the deadline passed and open connections were cut. */
  drained: boolean;
  waitedMs: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function drain(servers: Server[], o: DrainOptions): Promise<DrainResult> {
  const started = Date.now();
  const pollMs = o.pollMs ?? 50;
  // close() stops listening now; its callback runs once every connection has ended.
  const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  // Keep-alive connections never end by themselves, and one that finishes its last request
  // during the drain turns idle again; Node's close() closes idle ones once, Bun's not at
  // all. So sweep idle connections until none is left: a request in flight is never cut.
  const sweep = () => {
    for (const s of servers) s.closeIdleConnections?.();
  };
  sweep();
  const sweeper = setInterval(sweep, pollMs);
  let over = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), o.deadlineMs)));
  const finished = (async () => {
    await closed;
    while (!over && o.busy?.()) await sleep(pollMs);
    return "done" as const;
  })();
  try {
    const outcome = await Promise.race([finished, late]);
    if (outcome === "late") {
      for (const s of servers) s.closeAllConnections?.();
      await Promise.race([closed, sleep(1000)]);
    }
    return { drained: outcome === "done", waitedMs: Date.now() - started };
  } finally {
    over = true;
    clearInterval(sweeper);
    clearTimeout(timer);
  }
}

/** Exit status for a process ended by a second signal: 128 + the signal number (shell convention). */
export function signalExitCode(signal: string): number {
  return 128 + ({ SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGTERM: 15 }[signal] ?? 0);
}
