// Sync positions the proxy hands out when it adds something to an answer. The homeserver's
// token (a /sync next_batch, a sliding sync pos) gets a short suffix of ours, so that the next
// request's `since`/`pos` says exactly which of our answers the client received: a quiet
// account polled with timeout=0 gets the same next_batch again and again, and only the suffix
// tells a retry after a lost answer from a request after a received one. The suffix is
// stripped from every position parameter before a request goes to the homeserver, which never
// sees it (docs/clients.md "Sync tokens").
import { randomBytes } from "node:crypto";

/** Made of URI-unreserved characters only (RFC 3986 §2.3): no client percent-encodes them. */
const MARK = ".mrp_";
const ID_LENGTH = 12;
const WRAPPED = /\.mrp_[0-9a-z]{12}$/;
// Query parameters that carry a sync position: /sync `since`, sliding sync `pos`, and `from`/`to`,
// which the spec lets a client fill from a /sync next_batch (GET /keys/changes, GET
// /rooms/{roomId}/messages, the legacy GET /events).
const POSITION_PARAMS = new Set(["since", "pos", "from", "to"]);

function randomId(): string {
  const bytes = randomBytes(ID_LENGTH);
  let s = "";
  for (const b of bytes) s += (b % 36).toString(36);
  return s;
}

/**
 * A new suffix (`.mrp_` and 12 random characters) for an answer we add to. It is chosen, and
 * booked as what acknowledges the answer's deliveries, before the answer goes out: the
 * homeserver's half of the position is known only once its body streams, ours is known at once.
 */
export function newMark(): string {
  return MARK + randomId();
}

/** The homeserver's token with this suffix of ours (newMark) in place of any it had. */
export function withMark(token: string, mark: string): string {
  return unwrapToken(token) + mark;
}

/** A new position for an answer we added to: the homeserver's own token plus a new suffix. */
export function wrapToken(token: string): string {
  return withMark(token, newMark());
}

/** Our suffix of a position of ours (what the store books, newMark); undefined for any other. */
export function markOf(token: string): string | undefined {
  return WRAPPED.test(token) ? token.slice(-(MARK.length + ID_LENGTH)) : undefined;
}

/** The homeserver's token inside one of ours; any other token as it is. */
export function unwrapToken(token: string): string {
  return WRAPPED.test(token) ? token.slice(0, -(MARK.length + ID_LENGTH)) : token;
}

export function isWrapped(token: string): boolean {
  return WRAPPED.test(token);
}

/** Cheap test before any parsing: can this raw request target hold a position of ours? */
function mayHoldWrapped(target: string): boolean {
  return target.includes(MARK);
}

/**
 * The raw request target with our suffix removed from every position parameter, or undefined
 * when there is none. Only the suffix goes: the rest of the target stays byte for byte as the
 * client sent it (percent-encoding included), and the suffix, being unreserved characters,
 * ends the raw value just as it ends the decoded one.
 */
export function unwrapTarget(target: string): string | undefined {
  if (!mayHoldWrapped(target)) return undefined;
  const q = target.indexOf("?");
  if (q === -1) return undefined;
  let changed = false;
  const parts = target
    .slice(q + 1)
    .split("&")
    .map((p) => {
      const eq = p.indexOf("=");
      if (eq === -1) return p;
      let name: string;
      try {
        name = decodeURIComponent(p.slice(0, eq).replace(/\+/g, " "));
      } catch {
        return p;
      }
      const value = p.slice(eq + 1);
      if (!POSITION_PARAMS.has(name) || !WRAPPED.test(value)) return p;
      changed = true;
      return p.slice(0, eq + 1) + value.slice(0, -(MARK.length + ID_LENGTH));
    });
  return changed ? `${target.slice(0, q + 1)}${parts.join("&")}` : undefined;
}

/** unwrapTarget, or the target itself when nothing is ours. */
export function upstreamTarget(target: string): string {
  return unwrapTarget(target) ?? target;
}
