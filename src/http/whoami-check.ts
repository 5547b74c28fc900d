// Is the upstream a Matrix client API that checks tokens? Its whoami, asked without a token,
// must answer 401 (client-server API §GET /account/whoami; M_MISSING_TOKEN). A 200 would mean
// something in front of the homeserver answers for it; a 404 on both v3 and r0 means --upstream
// points somewhere other than the client API. Either way every refresh would fail. Shared by
// `doctor` and /readyz.
import type { ClientPaths } from "./client-paths.ts";

export interface WhoamiCheck {
  ok: boolean;
  detail: string;
}

export async function checkWhoamiPath(paths: ClientPaths, headerTimeoutMs: number): Promise<WhoamiCheck> {
  try {
    const res = await paths.call({
      method: "GET",
      path: "account/whoami",
      headers: { "accept-encoding": "identity" },
      headerTimeoutMs,
    });
    if (res.status === 401) return { ok: true, detail: `${res.target} without a token answered 401` };
    return {
      ok: false,
      detail: `${res.target} without a token answered ${res.status} (expected 401): is --upstream the homeserver's client API, with nothing answering for it?`,
    };
  } catch (e) {
    return { ok: false, detail: `whoami unreachable: ${(e as Error).message}` };
  }
}
