import type { ServerResponse } from "node:http";
import { MatrixError } from "../matrix/errors.ts";
import type { UpstreamAuthError } from "./auth.ts";
import { corsHeaders } from "./cors.ts";

/**
 * A failure while reading the homeserver's answer, as the client should see it: 502, the
 * homeserver's failure (RFC 9110 §15.6.3: the gateway got an invalid response), never our own
 * 500 and never a 413, which would blame the client's request. `maxBytes` is what we buffer.
 */
export function homeserverAnswerFailed(err: unknown, maxBytes: number): MatrixError {
  if (err instanceof MatrixError && err.status === 499) return err; // the client went away first
  if (err instanceof MatrixError && err.errcode === "M_TOO_LARGE")
    return new MatrixError(
      "M_UNKNOWN",
      `The homeserver's answer is larger than ${maxBytes} bytes, more than the proxy rewrites`,
      { status: 502 },
    );
  const why = (err as NodeJS.ErrnoException | undefined)?.code ?? (err instanceof Error ? err.message : String(err));
  return new MatrixError("M_UNKNOWN", `The homeserver's answer broke off before its end (${why})`, { status: 502 });
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    ...corsHeaders,
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(payload)),
    "cache-control": "no-store",
    ...headers,
  });
  res.end(payload);
}

export function sendError(res: ServerResponse, err: unknown): void {
  const e = err instanceof MatrixError ? err : new MatrixError("M_UNKNOWN", "Internal proxy error");
  sendJson(res, e.status, e.body(), e.headers);
}

/** The homeserver's own refusal of a token (401/403, soft_logout included), relayed byte for byte. */
export function relayRefusal(res: ServerResponse, e: UpstreamAuthError): void {
  res.writeHead(e.status, {
    ...corsHeaders,
    "content-type": "application/json",
    "content-length": String(e.body.length),
  });
  res.end(e.body);
}
