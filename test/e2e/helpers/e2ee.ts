// Uploading end-to-end encryption keys the way a client does, with real, verifiable
// signatures (client-server API §End-to-End Encryption: device keys are self-signed with
// the device's ed25519 key; the self-signing key is signed by the master key).
import { api, call, type Session } from "./client.ts";
import { newCurve25519Public, newEd25519, signJson, type Ed25519Key } from "./signing.ts";

export interface DeviceKeys extends Record<string, unknown> {
  user_id: string;
  device_id: string;
  algorithms: string[];
  keys: Record<string, string>;
  signatures: Record<string, Record<string, string>>;
}

export interface UploadedDevice {
  deviceKeys: DeviceKeys;
  ed25519: Ed25519Key;
}

/** POST /keys/upload with a freshly generated, self-signed set of device keys. */
export async function uploadDeviceKeys(s: Session): Promise<UploadedDevice> {
  const ed25519 = newEd25519();
  const unsigned = {
    user_id: s.userId,
    device_id: s.deviceId,
    algorithms: ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
    keys: { [`curve25519:${s.deviceId}`]: newCurve25519Public(), [`ed25519:${s.deviceId}`]: ed25519.publicKey },
    signatures: {},
  };
  const deviceKeys = signJson(unsigned, s.userId, `ed25519:${s.deviceId}`, ed25519) as DeviceKeys;
  const answer = await api<{ one_time_key_counts?: unknown }>(s, "POST", "/_matrix/client/v3/keys/upload", {
    device_keys: deviceKeys,
  });
  if (typeof answer !== "object" || answer === null) throw new Error("keys/upload: unexpected answer");
  return { deviceKeys, ed25519 };
}

export interface CrossSigning {
  master: Ed25519Key;
  selfSigning: Ed25519Key;
  userSigning: Ed25519Key;
  masterKey: Record<string, unknown>;
  selfSigningKey: Record<string, unknown>;
  userSigningKey: Record<string, unknown>;
}

function crossSigningKey(userId: string, usage: string, key: Ed25519Key): Record<string, unknown> {
  return { user_id: userId, usage: [usage], keys: { [`ed25519:${key.publicKey}`]: key.publicKey } };
}

/**
 * Uploads master, self-signing and user-signing keys, then signs `device` with the
 * self-signing key. The upload is user-interactive unless the server waives it for a
 * first upload (MSC3967); both paths are handled with password auth.
 */
export async function uploadCrossSigning(s: Session, device: UploadedDevice): Promise<CrossSigning> {
  const master = newEd25519();
  const selfSigning = newEd25519();
  const userSigning = newEd25519();
  const masterKeyId = `ed25519:${master.publicKey}`;
  const masterKey = crossSigningKey(s.userId, "master", master);
  const selfSigningKey = signJson(
    crossSigningKey(s.userId, "self_signing", selfSigning),
    s.userId,
    masterKeyId,
    master,
  );
  const userSigningKey = signJson(
    crossSigningKey(s.userId, "user_signing", userSigning),
    s.userId,
    masterKeyId,
    master,
  );
  const body = { master_key: masterKey, self_signing_key: selfSigningKey, user_signing_key: userSigningKey };
  const path = "/_matrix/client/v3/keys/device_signing/upload";
  const first = await call<{ session?: string }>(s.clientUrl, "POST", path, {
    token: s.accessToken,
    body,
    allow: [401],
  });
  if (first.status === 401) {
    await call(s.clientUrl, "POST", path, {
      token: s.accessToken,
      body: {
        ...body,
        auth: {
          type: "m.login.password",
          identifier: { type: "m.id.user", user: s.userId },
          password: s.password,
          session: first.body.session,
        },
      },
    });
  }
  const signedDevice = signJson(device.deviceKeys, s.userId, `ed25519:${selfSigning.publicKey}`, selfSigning);
  const { failures } = await api<{ failures?: Record<string, unknown> }>(
    s,
    "POST",
    "/_matrix/client/v3/keys/signatures/upload",
    {
      [s.userId]: { [s.deviceId]: signedDevice },
    },
  );
  if (failures && Object.keys(failures).length > 0)
    throw new Error(`signatures/upload failures: ${JSON.stringify(failures)}`);
  return { master, selfSigning, userSigning, masterKey, selfSigningKey, userSigningKey };
}
