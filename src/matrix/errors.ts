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
