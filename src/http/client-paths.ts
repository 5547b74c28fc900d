// The proxy's own calls to the homeserver's client API (whoami, the requester's device list,
// readiness) under whichever version prefix the homeserver serves. Synapse before 1.48 serves
// only `/_matrix/client/r0/…`; later servers serve `v3` (client-server API §API standards,
// "Endpoint versioning": v3 replaced r0 in spec v1.1). We try the prefix that last worked, fall
// back to the other when the answer says "no such endpoint" (404, or M_UNRECOGNIZED), remember
// the one that answered, and try v3 again now and then so an upgraded homeserver is noticed.
import type { OutgoingHttpHeaders } from "node:http";
import type { Logger } from "../observe/log.ts";
import { parseJsonObject, readBody } from "./body.ts";
import type { Upstream } from "./upstream.ts";

export type ClientVersion = "v3" | "r0";

export interface ClientCall {
  method: string;
  /** The path after the version, e.g. "account/whoami". */
  path: string;
  headers: OutgoingHttpHeaders;
  /** A request body (sent again as is if the other prefix is tried). */
  body?: Uint8Array;
  headerTimeoutMs: number;
  /** Largest body we read (default 64 KiB). */
  maxBytes?: number;
}

export interface ClientAnswer {
  status: number;
  body: Buffer;
  /** The prefix that gave this answer. */
  version: ClientVersion;
  /** The full target that gave this answer, for messages. */
  target: string;
}

export interface ClientPathsOptions {
  upstream: Upstream;
  log?: Logger;
  /** While on r0, how often a call tries v3 first again (default 10 minutes). */
  reprobeMs?: number;
  now?: () => number;
}

export interface ClientPaths {
  /** The prefix tried first. */
  readonly preferred: ClientVersion;
  call(c: ClientCall): Promise<ClientAnswer>;
}

/** "This server has no such endpoint", as opposed to an answer from the endpoint itself. */
function unrecognized(status: number, body: Buffer): boolean {
  if (status === 404) return true;
  if (status < 400 || status >= 500) return false;
  return parseJsonObject(body)?.errcode === "M_UNRECOGNIZED";
}

export function createClientPaths(o: ClientPathsOptions): ClientPaths {
  const now = o.now ?? Date.now;
  const reprobeMs = o.reprobeMs ?? 10 * 60_000;
  let preferred: ClientVersion = "v3";
  let probedV3At = 0;

  function order(): ClientVersion[] {
    if (preferred === "v3") return ["v3", "r0"];
    if (now() - probedV3At >= reprobeMs) {
      probedV3At = now();
      return ["v3", "r0"];
    }
    return ["r0", "v3"];
  }

  return {
    get preferred() {
      return preferred;
    },
    async call(c) {
      let last: ClientAnswer | undefined;
      for (const version of order()) {
        const target = `/_matrix/client/${version}/${c.path}`;
        const res = await o.upstream.open({
          method: c.method,
          target,
          headers: c.headers,
          body: c.body,
          headerTimeoutMs: c.headerTimeoutMs,
        });
        const body = await readBody(res, c.maxBytes ?? 64 * 1024);
        const status = res.statusCode ?? 0;
        last = { status, body, version, target };
        if (unrecognized(status, body)) continue;
        if (version !== preferred) {
          o.log?.info("the homeserver's client API answers under a different version prefix; using it from now on", {
            from: preferred,
            to: version,
            path: c.path,
          });
          preferred = version;
          if (version === "r0") probedV3At = now();
        }
        return last;
      }
      return last!;
    },
  };
}
