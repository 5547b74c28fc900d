import type { ServerResponse } from "node:http";
import { corsHeaders } from "../http/cors.ts";

// One table from errcode to HTTP status (client-server API §Standard error response), so a
// handler names the Matrix meaning and never picks a status by hand.
const STATUS: Record<string, number> = {
  M_INVALID_PARAM: 400,
  M_BAD_JSON: 400,
  M_NOT_JSON: 400,
  M_MISSING_TOKEN: 401,
  M_UNKNOWN_TOKEN: 401,
  M_FORBIDDEN: 403,
  M_NOT_FOUND: 404,
  M_UNRECOGNIZED: 404,
  M_TOO_LARGE: 413,
  M_LIMIT_EXCEEDED: 429,
  M_UNKNOWN: 500,
};

export class MatrixError extends Error {
  readonly errcode: string;
  readonly status: number;
  readonly extra: Record<string, unknown>;
  readonly headers: Record<string, string>;

  constructor(
    errcode: string,
    message: string,
    opts: { status?: number; extra?: Record<string, unknown>; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.errcode = errcode;
    this.status = opts.status ?? STATUS[errcode] ?? 500;
    this.extra = opts.extra ?? {};
    this.headers = opts.headers ?? {};
  }

  body(): Record<string, unknown> {
    return { errcode: this.errcode, error: this.message, ...this.extra };
  }
}

/**
 * A failure while reading the homeserver's answer, as the client should see it: 502, the
 * homeserver's failure (RFC 9110 §15.6.3: the gateway got an invalid response), never our own
 * 500 and never a 413, which would blame the client's request. `maxBytes` is what we buffer.
 */
export function homeserverAnswerFailed(err: unknown, maxBytes: number): MatrixError {
  if (err instanceof MatrixError && err.status === 499) return err; // the client went away first
  if (err instanceof MatrixError && err.errcode === "M_TOO_LARGE")
    return new MatrixError("M_UNKNOWN", `The homeserver's answer is larger than ${maxBytes} bytes, more than the proxy rewrites`, { status: 502 });
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
