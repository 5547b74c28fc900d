import { describe, expect, test } from "vitest";
import { redactTarget } from "../../src/http/request-log.ts";

describe("redactTarget: credential parameters by their decoded names", () => {
  test.each([
    ["/a?access_token=T&x=1", "/a?access_token=<redacted>&x=1"],
    ["/a?x=1&access%5Ftoken=T", "/a?x=1&access%5Ftoken=<redacted>"],
    ["/a?%41CCESS_TOKEN=T", "/a?%41CCESS_TOKEN=<redacted>"],
    ["/a?refresh%5ftoken=T;x=1", "/a?refresh%5ftoken=<redacted>;x=1"],
    ["/a?x=1;access_tok%65n=T", "/a?x=1;access_tok%65n=<redacted>"],
    ["/a?access_token%=T&access_token=U", "/a?access_token%=T&access_token=<redacted>"], // a malformed escape is another name
  ])("%s", (target, logged) => expect(redactTarget(target)).toBe(logged));

  test("targets without a credential come back as they were", () => {
    for (const t of ["/a", "/a?", "/a?token_type=x&access", "/_matrix/client/v3/sync?since=s1&timeout=30000"])
      expect(redactTarget(t)).toBe(t);
  });
});
