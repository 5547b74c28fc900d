import net from "node:net";

// appendices §User Identifiers and §Server Name. Remote ids may predate the strict localpart
// grammar, so any printable ASCII except ':' is accepted there (the "historical" grammar).
const LOCALPART = /^[\x21-\x39\x3B-\x7E]+$/;
const DNS_NAME =
  /^(?=.{1,255}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
const IPV4 = /^\d{1,3}(?:\.\d{1,3}){3}$/;

/** A valid server name: IPv4 literal, [IPv6] literal or DNS name, optional port 1–65535. */
export function isValidServerName(name: string): boolean {
  let host = name;
  let port: string | undefined;
  if (name.startsWith("[")) {
    const end = name.indexOf("]");
    if (end === -1) return false;
    host = name.slice(1, end);
    const rest = name.slice(end + 1);
    if (rest !== "" && !rest.startsWith(":")) return false;
    port = rest ? rest.slice(1) : undefined;
    if (!net.isIPv6(host)) return false;
  } else {
    const i = name.lastIndexOf(":");
    if (i !== -1) {
      host = name.slice(0, i);
      port = name.slice(i + 1);
    }
    if (IPV4.test(host) ? !net.isIPv4(host) : !DNS_NAME.test(host)) return false;
    if (host.endsWith(".")) return false; // a trailing dot is an empty label
  }
  if (port !== undefined && !(/^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535)) return false;
  return true;
}

/**
 * The server name of a user id. The localpart cannot contain ':' (appendices §User
 * Identifiers), so everything after the first ':' is the server name, port and IPv6 brackets
 * included; "" for a string without one.
 */
export function serverOf(userId: string): string {
  const i = userId.indexOf(":");
  return i < 0 ? "" : userId.slice(i + 1);
}

export function isValidUserId(id: string): boolean {
  if (id.length > 255 || !id.startsWith("@")) return false;
  const colon = id.indexOf(":");
  if (colon < 2) return false;
  return LOCALPART.test(id.slice(1, colon)) && isValidServerName(id.slice(colon + 1));
}

/** The {userId} path segment, percent-decoded once; undefined when it is not valid UTF-8 escapes. */
export function decodeUserIdParam(raw: string): string | undefined {
  try {
    return decodeURIComponent(raw);
  } catch {
    return undefined;
  }
}
