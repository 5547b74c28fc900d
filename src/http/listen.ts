import http, { type IncomingMessage, type ServerResponse } from "node:http";
import { rmSync } from "node:fs";

export type Listener = (req: IncomingMessage, res: ServerResponse) => void;

/** `host:port`, `[v6]:port` or `unix:/path`, as the --listen flags take them. */
export function parseListen(addr: string): { path: string } | { host: string; port: number } {
  if (addr.startsWith("unix:")) return { path: addr.slice(5) };
  const i = addr.lastIndexOf(":");
  return { host: addr.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(addr.slice(i + 1)) };
}

export async function listen(addr: string, handler: Listener): Promise<http.Server> {
  const server = http.createServer(handler);
  // A /sync long-poll is idle for its whole timeout (30 s by default, clients use up to 120 s+).
  // Node's requestTimeout (300 s) and Bun's 10 s idle timeout would cut it; the client and
  // the upstream header timeout bound each request instead.
  server.requestTimeout = 0;
  server.timeout = 0;
  server.headersTimeout = 60_000; // slowloris: a request's headers still must arrive
  server.keepAliveTimeout = 75_000; // outlive common load balancers' 60 s idle so they close first
  const where = parseListen(addr);
  if ("path" in where) rmSync(where.path, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    // A deep accept queue: bursts (a thousand clients refreshing at once) must wait, not be refused.
    if ("path" in where) server.listen({ path: where.path, backlog: 4096 }, resolve);
    else server.listen({ port: where.port, host: where.host, backlog: 4096 }, resolve);
  });
  return server;
}

export function boundAddress(server: http.Server): string {
  const a = server.address();
  if (a === null) return "";
  if (typeof a === "string") return `unix:${a}`;
  return a.family === "IPv6" ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}
