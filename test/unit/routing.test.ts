import { describe, expect, test } from "vitest";
import { CLIENT_VERSIONS, Router } from "../../src/http/router.ts";
import { buildRoutes } from "../../src/routes/table.ts";

describe("router", () => {
  const r = new Router<string>();
  r.add(["POST"], `/_matrix/client/${CLIENT_VERSIONS}/user/:userId/devices/refresh`, "refresh");
  r.add(["POST"], "/_matrix/client/unstable/org.matrix.msc2638/user/:userId/devices/refresh", "refresh-unstable");

  test.each([
    ["/_matrix/client/r0/user/%40bob%3Aex.org/devices/refresh", "refresh", "%40bob%3Aex.org"],
    ["/_matrix/client/v3/user/%40bob%3Aex.org/devices/refresh", "refresh", "%40bob%3Aex.org"],
    ["/_matrix/client/v3/user/@bob:ex.org/devices/refresh/", "refresh", "@bob:ex.org"],
    ["/_matrix/client/unstable/org.matrix.msc2638/user/%40b%3Ax/devices/refresh", "refresh-unstable", "%40b%3Ax"],
    ["/_matrix/client/unstable/org.matrix.msc2638/user/%40b%3Ax/devices/refresh/", "refresh-unstable", "%40b%3Ax"],
    ["/_matrix/client/v3/user/a%2Fb/devices/refresh", "refresh", "a%2Fb"],
  ])("%s matches %s with the raw userId", (path, handler, userId) => {
    expect(r.match("POST", path)).toEqual({ handler, params: expect.objectContaining({ userId }) });
  });

  test.each([
    "/_matrix/client/v2/user/x/devices/refresh",
    "/_matrix/client/v3/user/x/devices/refresh//",
    "/_matrix/client/v3/user/x/devices",
    "/_matrix/client/v3/user//devices/refresh",
    "/_matrix/client/v3/user/x/y/devices/refresh",
  ])("%s does not match", (path) => {
    expect(r.match("POST", path)).toBeUndefined();
  });

  test("method matters, and has() answers for OPTIONS", () => {
    expect(r.match("GET", "/_matrix/client/v3/user/x/devices/refresh")).toBeUndefined();
    expect(r.has("/_matrix/client/v3/user/x/devices/refresh")).toBe(true);
    expect(r.has("/_matrix/client/v3/sync")).toBe(false);
  });

  test("the route table intercepts /versions with and without a trailing slash", () => {
    const routes = buildRoutes();
    expect(routes.match("GET", "/_matrix/client/versions")).toBeDefined();
    expect(routes.match("GET", "/_matrix/client/versions/")).toBeDefined();
    expect(routes.match("POST", "/_matrix/client/versions")).toBeUndefined();
    expect(routes.match("GET", "/_matrix/client/v3/versions")).toBeUndefined();
  });
});
