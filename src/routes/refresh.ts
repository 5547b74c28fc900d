// POST /_matrix/client/{r0,v3}/user/{userId}/devices/refresh (MSC2638) and its unstable forms.
// 202 means "accepted: done, or still in progress" (docs/architecture.md "The refresh
// endpoint"); failures known within --refresh-wait-ms are reported, with retries already
// scheduled.
import type { RouteContext } from "./context.ts";
import { FEDERATION_AUTH } from "../http/auth.ts";
import { MatrixError } from "../matrix/errors.ts";
import { sendJson } from "../http/reply.ts";
import { StoreUnavailable } from "../store/store-guard.ts";
import { authenticate } from "./authenticate.ts";
import { refreshFailed } from "../resync/failure.ts";
import { decodeUserIdParam, isValidUserId } from "../matrix/user-id.ts";

// How soon a refresh refused by a failing store may be tried again (Retry-After, seconds).
const STORE_RETRY_AFTER_S = 5;

export async function refreshRoute(ctx: RouteContext): Promise<void> {
  const { req, res, deps } = ctx;
  const who = await authenticate(ctx, FEDERATION_AUTH); // a revoked token must not reach federation
  if (!who) return;
  req.resume(); // the body (if any) carries nothing we use
  const target = decodeUserIdParam(ctx.params.userId ?? "");
  if (target === undefined || !isValidUserId(target))
    throw new MatrixError(
      "M_INVALID_PARAM",
      `Not a valid Matrix user ID: ${JSON.stringify(target ?? ctx.params.userId)}`,
    );

  const svc = deps.services;
  let mine: { userId: string; deviceId: string }[] = [];
  let out;
  try {
    // The requester's devices are tracked only once the rate limits admit the refresh.
    out = await svc.resyncer.refresh(
      target,
      who.userId,
      deps.config.refreshWaitMs,
      async () => {
        const devices = await svc.delivery.requesterDevices(who);
        return () => {
          mine = devices;
          return svc.delivery.trackDevices(devices, target);
        };
      },
      { trigger: "endpoint", token: who.token, retry: true },
    );
    // The asker asked explicitly: while we serve a list that differs from the homeserver's (an
    // overlay), their devices are told, even when it is not news to the other trackers (a cache
    // hit, or a list equal to the one already served). A list equal to the homeserver's own is
    // not news to anyone (resync/heal.ts). Nor were they told when they joined a fetch whose
    // fan-out had begun (resync/bookings.ts).
    if (out.kind === "ok" && (out.fromCache || !out.changed || out.late) && (await svc.store.getSnapshot(target)))
      await svc.delivery.deliver(mine, target);
    // Answered 202 while the fetch runs: when it lands, the asker's devices are told if its
    // fan-out could not have covered them (a late join; another replica's fetch, whose fan-out
    // may have read the trackers before ours were written), and only of a real change
    // (resync/heal.ts). A device the fan-out did tell still holds that pending row (this runs
    // right after it): adding it again is a no-op.
    if (out.kind === "pending" && out.landed) {
      void out.landed
        .then((o) =>
          o.kind === "ok" && o.changed && (o.late || o.fromCache) ? svc.delivery.deliver(mine, target) : undefined,
        )
        .catch((e) =>
          svc.log.warn("could not tell the requester's devices of a refresh that landed after its answer", {
            userId: target,
            error: String((e as Error)?.message ?? e),
          }),
        );
    }
  } catch (e) {
    if (!(e instanceof StoreUnavailable)) throw e;
    // Nothing was promised: the client asks again, as for a 429 (docs/operations.md, "When the store fails").
    throw new MatrixError("M_UNKNOWN", "The proxy cannot record refreshes right now; try again shortly", {
      status: 503,
      extra: { retry_after_ms: STORE_RETRY_AFTER_S * 1000 },
      headers: { "retry-after": String(STORE_RETRY_AFTER_S) },
    });
  }
  svc.metrics?.refreshes.inc({ outcome: out.kind === "failed" ? out.error.kind : out.kind });
  if (out.kind === "ok") svc.metrics?.cache.inc({ cache: "refresh_snapshot", result: out.fromCache ? "hit" : "miss" });
  switch (out.kind) {
    case "ok":
      // A cache hit never reaches onSnapshot, but the asker still wants its devices told (above).
      return sendJson(res, 202, {});
    case "local":
    case "pending":
      return sendJson(res, 202, {});
    case "limited": {
      const err = new MatrixError("M_LIMIT_EXCEEDED", "Too many device-list refreshes; try again later", {
        extra: { retry_after_ms: out.retryAfterMs },
        headers: { "retry-after": String(Math.ceil(out.retryAfterMs / 1000)) },
      });
      throw err;
    }
    case "failed":
      throw refreshFailed(target, out.error, out.nextRetryInMs);
  }
}
