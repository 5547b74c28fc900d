import type { RouteContext } from "./context.ts";
import { type Freshness, type Requester, UpstreamAuthError } from "../http/auth.ts";
import { relayRefusal } from "../http/reply.ts";

/**
 * Resolve the caller; on the homeserver's refusal, relay its exact answer and return undefined.
 * `fresh`: how old a cached whoami may be (routes that cause federation requests re-check).
 */
export async function authenticate(ctx: RouteContext, fresh?: Freshness): Promise<Requester | undefined> {
  try {
    return await ctx.deps.services.auth.resolve(ctx.req, fresh);
  } catch (e) {
    if (!(e instanceof UpstreamAuthError)) throw e;
    ctx.req.resume();
    relayRefusal(ctx.res, e);
    return undefined;
  }
}
