// The last line of defence: a fault no handler caught (a failing store in a callback, a bug)
// is logged and the proxy keeps serving. Exiting would cut every client's connection and
// long-poll at once, and a restart would meet the same fault again (docs/operations.md,
// "When the store fails").
import type { Logger } from "./log.ts";

interface ProcessEvents {
  on(event: "unhandledRejection", listener: (reason: unknown) => void): unknown;
  on(event: "uncaughtException", listener: (err: Error) => void): unknown;
}

const describe = (e: unknown): string => (e instanceof Error ? (e.stack ?? e.message) : String(e));

export function survivePanics(log: Logger, proc: ProcessEvents = process): void {
  proc.on("unhandledRejection", (reason) =>
    log.error("unhandled rejection (ignored; the proxy keeps running)", { error: describe(reason) }),
  );
  proc.on("uncaughtException", (err) =>
    log.error("uncaught exception (ignored; the proxy keeps running)", { error: describe(err) }),
  );
}
