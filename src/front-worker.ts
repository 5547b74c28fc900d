// Entry of a front-end thread (--front-threads; src/engine/bun/threads.ts). It lives beside
// main.ts because the compiled binary embeds it as a second entrypoint, found by that name.
import { parentPort, workerData } from "node:worker_threads";
import { parseTrust, trustPredicate } from "./http/forwarded.ts";
import { createAccessLog } from "./engine/bun/access-log.ts";
import { appHop, homeserverHop } from "./engine/bun/hop.ts";
import { startFront } from "./engine/bun/server.ts";
import { frontIntercepts } from "./engine/bun/start.ts";
import { startMemoryReducer } from "./observe/memory-reducer.ts";
import { MainLink, type ToMain, type ToWorker } from "./engine/bun/thread-link.ts";
import type { FrontWorkerData } from "./engine/bun/threads.ts";
import { buildRoutes } from "./routes/table.ts";

const d = workerData as FrontWorkerData;
const port = parentPort!;
const link = new MainLink((m: ToMain) => port.postMessage(m));
const upstream = new URL(d.upstream);
const trusted = trustPredicate(parseTrust(d.trustedProxies));
const front = startFront({
  listen: d.listen,
  reusePort: true,
  homeserver: homeserverHop({ upstream, headerTimeoutMs: d.headerTimeoutMs, trusted, ca: d.upstreamCa }),
  app: appHop({ destination: d.app, secret: d.secret, defaultHost: upstream.host }),
  intercepts: frontIntercepts(buildRoutes()),
  syncGate: link,
  access: createAccessLog({ log: link.logger(d.logLevel), metrics: link.metrics, trusted }),
});

const reporter = setInterval(() => link.report(front.connections), 500);
// Each thread has its own heap, with its own polls' garbage (observe/memory-reducer.ts).
const reducer = startMemoryReducer();
port.on("message", (m: ToWorker) => {
  switch (m.t) {
    case "flush":
      return link.report(front.connections);
    case "close":
      return front.close(() => {
        clearInterval(reporter);
        reducer?.stop();
        link.report(0);
        link.post({ t: "closed" });
      });
    case "closeIdle":
      return front.closeIdleConnections();
    case "closeAll":
      return front.closeAllConnections();
    default:
      return link.receive(m);
  }
});
link.post({ t: "ready" });
