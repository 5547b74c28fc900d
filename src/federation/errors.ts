// One error type for everything that can go wrong talking to a remote homeserver.
// `kind` is what the caller branches on (docs/architecture.md "Errors"): "refused" means the
// private-address guard stopped us (no retry), "timeout" maps to 504, everything else
// from the network is "transport" (502, retried later).

export type FederationErrorKind =
  | "not_found"
  | "remote"
  | "transport"
  | "timeout"
  | "refused"
  | "invalid"
  | "too_large";

export class FederationError extends Error {
  readonly kind: FederationErrorKind;
  /** The remote's HTTP status, where there was one. */
  readonly status?: number;

  constructor(kind: FederationErrorKind, message: string, status?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "FederationError";
    this.kind = kind;
    if (status !== undefined) this.status = status;
  }
}

/** Wrap anything thrown by the network stack as a "transport" error, keeping the code. */
export function asTransportError(e: unknown, what: string): FederationError {
  if (e instanceof FederationError) return e;
  const code = typeof e === "object" && e !== null && "code" in e ? String((e as { code: unknown }).code) : "";
  const msg = e instanceof Error ? e.message : String(e);
  return new FederationError("transport", `${what}: ${code ? `${code} ` : ""}${msg}`, undefined, { cause: e });
}
