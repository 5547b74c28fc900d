import type { Server } from "node:http";
import type { Config } from "./config.ts";
import { createLogger, type Logger } from "./ops/log.ts";
import { createApp } from "./server/app.ts";
import { parseTrust, trustPredicate } from "./server/forwarded.ts";
import { boundAddress, listen } from "./server/listen.ts";
import { buildRoutes } from "./server/routes.ts";
import { createUpstream } from "./server/upstream.ts";
import { VERSION } from "./version.ts";

export interface RunningProxy {
  server: Server;
  address: string; // host:port or unix:/path actually bound
  log: Logger;
  close(): Promise<void>;
}

/** Wire the proxy's parts together and start listening. Tests call this in-process. */
export async function startProxy(config: Config, log: Logger = createLogger(config.logLevel)): Promise<RunningProxy> {
  const upstream = createUpstream(config.upstream);
  const trusted = trustPredicate(parseTrust(config.trustedProxies));
  const app = createApp({ config, upstream, trusted }, buildRoutes());
  const server = await listen(config.listen, app);
  const address = boundAddress(server);
  log.info("listening", { version: VERSION, listen: address, upstream: config.upstream, serverName: config.serverName });
  const close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections?.();
    });
  return { server, address, log, close };
}

/** `serve`: run until a signal. SIGTERM drains; a second signal exits at once. */
export async function serve(config: Config): Promise<void> {
  const proxy = await startProxy(config);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) process.exit(1);
    stopping = true;
    proxy.log.info("shutting down", { signal });
    void proxy.close().then(() => process.exit(0));
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}
