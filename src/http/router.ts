import { RegExpRouter } from "hono/router/reg-exp-router";
import { SmartRouter } from "hono/router/smart-router";
import { TrieRouter } from "hono/router/trie-router";

// Hono's router over the RAW request target. We cannot use Hono's app layer: it needs a fetch
// Request, and Bun builds Request.url after removing dot-segments, so the path we matched would
// not be the path we forward (the matrix-corporal bypass class of bug). Matching the exact bytes
// we forward keeps interception and pass-through consistent.

export interface Match<T> {
  handler: T;
  params: Record<string, string>;
}

export class Router<T> {
  // Hono's default pair: the single-regex router when the table allows it, the trie otherwise
  // (a `{r0|v3}` param beside a static `unstable` segment is beyond RegExpRouter).
  readonly #router = new SmartRouter<T>({ routers: [new RegExpRouter<T>(), new TrieRouter<T>()] });

  /** `path` uses Hono syntax; every pattern also matches with a trailing slash. */
  add(methods: string[], path: string, handler: T): void {
    for (const m of methods) {
      this.#router.add(m, path, handler);
      this.#router.add(m, `${path}/`, handler);
    }
  }

  match(method: string, path: string): Match<T> | undefined {
    const [hits, stash] = this.#router.match(method, path) as [[T, Record<string, number | string>][], unknown[]?];
    const first = hits[0];
    if (!first) return undefined;
    const params: Record<string, string> = {};
    for (const [name, at] of Object.entries(first[1])) {
      params[name] = typeof at === "number" ? String(stash?.[at] ?? "") : at;
    }
    return { handler: first[0], params };
  }

  /** Any method: tells whether an OPTIONS preflight is for one of our routes. */
  has(path: string): boolean {
    return ["GET", "POST", "PUT", "DELETE"].some((m) => this.match(m, path) !== undefined);
  }
}

/** Client-server API versions a route is served under (MSC2638 names r0; current clients use v3). */
export const CLIENT_VERSIONS = ":version{r0|v3}";
