// The bodies of a sync exchange that the route reads or rewrites: the sliding-sync request's
// (which connection, and did it ask for e2ee), and the homeserver's answer on its way through
// a splice, inflated first when it came compressed although we asked for identity.
import type { IncomingMessage, ServerResponse } from "node:http";
import { Transform } from "node:stream";
import { createBrotliDecompress, createGunzip, createInflate } from "node:zlib";
import type { BodySplice } from "../delivery/json/sync-splice.ts";
import { parseJsonObject } from "../http/body.ts";
import { pipeResponse } from "../http/passthrough.ts";
import { stripHopByHop } from "../http/upstream.ts";

/** Whose delivery a request reads: classic /sync's (the device's), or a sliding connection's. */
export interface SyncStream {
  /** The request may be given deliveries: a /sync, or a sliding request with e2ee enabled. */
  asked: boolean;
  /** The sliding-sync connection (MSC4186 `conn_id`, "" when absent); undefined for /sync. */
  conn: string | undefined;
}

export const CLASSIC: SyncStream = { asked: true, conn: undefined };
// Element X's sliding-sync bodies are a few KiB (matrix-rust-sdk 0.18: one list, twenty
// required_state pairs, a handful of extensions); far more is not a sync request we act on.
export const SLIDING_BODY_MAX = 1024 * 1024;

/** The connection and the e2ee wish of a sliding-sync request body (MSC4186, MSC3884). */
export function slidingStream(body: Buffer): SyncStream {
  const b = parseJsonObject(body);
  const ext = b?.["extensions"];
  const e2ee = ext !== null && typeof ext === "object" ? (ext as Record<string, unknown>)["e2ee"] : undefined;
  const enabled = e2ee !== null && typeof e2ee === "object" && (e2ee as Record<string, unknown>)["enabled"] === true;
  const conn = b?.["conn_id"];
  return { asked: enabled, conn: typeof conn === "string" ? conn : "" };
}

/** A decoder for a content-coding the homeserver used although we asked for identity. */
export function decoderFor(encoding: string | undefined): Transform | undefined {
  switch (encoding?.trim().toLowerCase()) {
    case "gzip":
    case "x-gzip":
      return createGunzip();
    case "deflate":
      return createInflate();
    case "br":
      return createBrotliDecompress();
    default:
      return undefined;
  }
}

/** The homeserver's answer, decoded when it came compressed, through the splice, to the client. */
export function pipeSpliced(
  up: IncomingMessage,
  res: ServerResponse,
  splice: BodySplice,
  decoder: Transform | undefined,
): void {
  const spliced = new Transform({
    transform(chunk: Buffer, _enc, next) {
      splice.feed(chunk, 0, chunk.length, (b, s, e) => this.push(Buffer.from(b.subarray(s, e))));
      next();
    },
    flush(next) {
      splice.end((b, s, e) => this.push(Buffer.from(b.subarray(s, e))));
      next();
      splice.settle();
    },
  });
  if (!decoder) return pipeResponse(up, res, spliced);
  const headers = stripHopByHop(up.headers);
  delete headers["content-length"];
  delete headers["content-encoding"];
  res.writeHead(200, up.statusMessage, headers);
  up.pipe(decoder).pipe(spliced).pipe(res);
  // A body that does not decode, or an upstream that dies mid-body: the client must not wait.
  decoder.on("error", () => res.destroy());
  up.on("aborted", () => res.destroy());
  up.on("error", () => res.destroy());
  res.on("close", () => {
    if (!up.complete) up.destroy();
  });
}
