// The federation client as the proxy uses it: resolver → discovery (with the private-address
// guard) → transport, plus the key we sign with and a self-check that the homeserver publishes it.
import { readFileSync } from "node:fs";
import type { Config } from "../config/config.ts";
import { createDiscovery } from "./discovery.ts";
import { createResolver } from "./dns.ts";
import { parseCidrList } from "./ip-guard.ts";
import { checkKeyPublished, type KeyCheck } from "./key-check.ts";
import { loadSigningKey, signingKeyFromConfig } from "./keyfile.ts";
import type { SigningKey } from "./signing.ts";
import { DEVICE_LIST_MAX_BYTES } from "./devices.ts";
import { createTransport } from "./transport.ts";

export async function loadKey(config: Config): Promise<SigningKey> {
  if (config.signingKey) return loadSigningKey(config.signingKey);
  return signingKeyFromConfig(config.signingKeySeed!, config.signingKeyId!, "--signing-key-seed");
}

export function createFederation(config: Config) {
  const ca = config.federationCa ? [readFileSync(config.federationCa, "utf8")] : [];
  let allowCidrs;
  try {
    allowCidrs = parseCidrList(config.federationAllowCidrs.join(","));
  } catch (e) {
    throw new Error(`--federation-allow-cidrs: ${(e as Error).message}`);
  }
  const resolver = createResolver(config.dnsServer ? { dnsServer: config.dnsServer } : {});
  const discovery = createDiscovery({ resolver, allowCidrs, ca });
  const transport = createTransport({
    discovery,
    ca,
    timeoutMs: config.federationTimeoutMs,
    maxBytes: DEVICE_LIST_MAX_BYTES,
    maxPerDestination: 3,
  });
  return { resolver, discovery, transport };
}

export type Federation = ReturnType<typeof createFederation>;

/**
 * Ask the homeserver's client listener first (Synapse serves /_matrix/key/v2/server there by
 * default), then its federation address through real discovery.
 */
export function checkOwnKey(config: Config, key: SigningKey, fed: Federation): Promise<KeyCheck> {
  const upstreamUrl = `${config.upstream.replace(/\/+$/, "")}/_matrix/key/v2/server`;
  const federationUrl = `federation://${config.serverName}/_matrix/key/v2/server`;
  return checkKeyPublished({
    serverName: config.serverName,
    key,
    urls: [upstreamUrl, federationUrl],
    async fetchJson(url, signal) {
      if (!url.startsWith("federation://")) {
        const r = await fetch(url, { signal, redirect: "follow" });
        return { status: r.status, body: await r.json().catch(() => undefined) };
      }
      const r = await fed.transport.request(config.serverName, { method: "GET", path: "/_matrix/key/v2/server" });
      let body: unknown;
      try {
        body = JSON.parse(new TextDecoder().decode(r.body));
      } catch {}
      return { status: r.status, body };
    },
  });
}
