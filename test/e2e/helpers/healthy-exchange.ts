// A healthy exchange between two real clients (matrix-js-sdk, Rust crypto) in an encrypted room:
// Megolm-encrypted messages both ways, whose room keys travel as Olm-encrypted to-device
// messages between known devices (client-server API §End-to-End Encryption, "m.room_key"), and
// an SAS verification of one device by the other over to-device messages (§Key verification
// framework, §Short Authentication String (SAS) verification). What the self-healing proof runs
// to show that normal traffic raises no alarm.
import {
  CryptoEvent,
  VerificationPhase,
  VerificationRequestEvent,
  VerifierEvent,
  type EmojiMapping,
  type ShowSasCallbacks,
  type VerificationRequest,
  type Verifier,
} from "matrix-js-sdk/lib/crypto-api/index.js";
import { waitFor } from "./client.ts";
import type { SdkClient } from "./js-sdk.ts";

const idOf = (c: SdkClient) => ({ userId: c.client.getUserId()!, deviceId: c.client.getDeviceId()! });

/** Resolves once each client's crypto lists the other's device. */
export async function knowEachOther(a: SdkClient, b: SdkClient, timeoutMs = 60_000): Promise<void> {
  for (const [who, other] of [
    [a, b],
    [b, a],
  ] as const) {
    const { userId, deviceId } = idOf(other);
    await waitFor(
      `${idOf(who).deviceId} to list ${userId}'s device ${deviceId}`,
      async () => ((await who.knownDeviceIds(userId)).includes(deviceId) ? true : undefined),
      timeoutMs,
      250,
    );
  }
}

/** The decrypted body of `body`'s message in the client's live timeline of `roomId`, once it decrypts. */
async function decrypted(c: SdkClient, roomId: string, body: string, timeoutMs: number): Promise<string> {
  return waitFor(
    `${idOf(c).deviceId} to decrypt "${body}"`,
    async () => {
      const events = c.client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [];
      const ev = events.find((e) => e.isEncrypted() && !e.isDecryptionFailure() && e.getContent().body === body);
      return ev ? (ev.getContent().body as string) : undefined;
    },
    timeoutMs,
    100,
  );
}

/**
 * `rounds` text messages each way, each one Megolm-encrypted by its sender's client and read
 * (decrypted) by the other's: each side then holds the other's room key, which only an Olm
 * to-device message from the sending device can have brought. Returns the bodies read.
 */
export async function megolmBothWays(a: SdkClient, b: SdkClient, roomId: string, rounds = 3): Promise<string[]> {
  const read: string[] = [];
  for (let i = 0; i < rounds; i++) {
    for (const [from, to] of [
      [a, b],
      [b, a],
    ] as const) {
      const body = `healthy ${i} from ${idOf(from).deviceId}`;
      await within(`sending "${body}"`, from.client.sendTextMessage(roomId, body), 60_000);
      read.push(await decrypted(to, roomId, body, 60_000));
    }
  }
  return read;
}

function phase(req: VerificationRequest, want: VerificationPhase, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (req.phase === want) done(resolve);
      else if (req.phase === VerificationPhase.Cancelled)
        done(() => reject(new Error(`verification cancelled (${req.cancellationCode}) waiting for phase ${want}`)));
    };
    const timer = setTimeout(
      () => done(() => reject(new Error(`verification still in phase ${req.phase}, not ${want}`))),
      timeoutMs,
    );
    const done = (then: () => void) => {
      clearTimeout(timer);
      req.off(VerificationRequestEvent.Change, check);
      then();
    };
    req.on(VerificationRequestEvent.Change, check);
    check();
  });
}

/** `p`, or an error naming `step` once `ms` have passed: a stuck step says which it was. */
function within<T>(step: string, p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${step} took over ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Confirms the SAS as a user would, once shown (or at once if it already is); resolves with the emoji. */
function confirmSas(v: Verifier): Promise<EmojiMapping[]> {
  return new Promise((resolve) => {
    const confirm = (sas: ShowSasCallbacks) => {
      void sas.confirm();
      resolve(sas.sas.emoji ?? []);
    };
    const shown = v.getShowSasCallbacks();
    if (shown) confirm(shown);
    else v.once(VerifierEvent.ShowSas, confirm);
  });
}

/**
 * `a` verifies `b`'s device by SAS, both users confirming: request (to-device), ready, start
 * (m.sas.v1), accept, keys, MACs, done. Resolves with the emoji both sides showed (equal, or the
 * MACs would not have matched).
 */
export async function verifyBySas(
  a: SdkClient,
  b: SdkClient,
  timeoutMs = 60_000,
): Promise<{ a: EmojiMapping[]; b: EmojiMapping[] }> {
  const { userId, deviceId } = idOf(b);
  const incoming = new Promise<VerificationRequest>((resolve) =>
    b.client.once(CryptoEvent.VerificationRequestReceived, resolve),
  );
  const ours = await within(
    "sending the request",
    a.client.getCrypto()!.requestDeviceVerification(userId, deviceId),
    timeoutMs,
  );
  const theirs = await within("SAS: the request reaching the other device", incoming, timeoutMs);
  await within("SAS: accepting (ready)", theirs.accept(), timeoutMs);
  await phase(ours, VerificationPhase.Ready, timeoutMs);
  const ourVerifier = await within("SAS: starting m.sas.v1", ours.startVerification("m.sas.v1"), timeoutMs);
  await phase(theirs, VerificationPhase.Started, timeoutMs);
  const theirVerifier = theirs.verifier!;
  const shown = Promise.all([confirmSas(ourVerifier), confirmSas(theirVerifier)]);
  await within(
    "SAS: the exchange (accept, keys, MACs, done)",
    Promise.all([ourVerifier.verify(), theirVerifier.verify()]),
    timeoutMs,
  );
  const [aEmoji, bEmoji] = await within("SAS: showing the SAS", shown, timeoutMs);
  await phase(ours, VerificationPhase.Done, timeoutMs);
  return { a: aEmoji, b: bEmoji };
}
