import http from "node:http";
import type { Config } from "../config/config.ts";
import { SELF_HEALTH_PATH } from "../routes/context.ts";
import { parseListen } from "../http/listen.ts";

/** For a container HEALTHCHECK: 0 when the running proxy answers its health path, else 1. */
export async function runHealthcheck(config: Config): Promise<number> {
  const addr = config.metricsListen ?? config.listen;
  const path = config.metricsListen ? "/healthz" : SELF_HEALTH_PATH;
  const where = parseListen(addr);
  const target =
    "path" in where
      ? { socketPath: where.path }
      : { host: where.host === "0.0.0.0" || where.host === "::" ? "127.0.0.1" : where.host, port: where.port };
  const status = await new Promise<number>((resolve) => {
    const req = http.get({ ...target, path, timeout: 3000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(0));
  });
  process.stdout.write(status === 200 ? "healthy\n" : `unhealthy (${status || "no answer"})\n`);
  return status === 200 ? 0 : 1;
}
