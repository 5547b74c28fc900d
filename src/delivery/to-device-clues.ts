// What detection reads of to-device events (client-server API §Send-to-Device messaging, and the
// event types of §End-to-End Encryption and §Key verification framework): the sender, the event
// type, and the one key or device id the type names. Nothing else of an event is kept, and none
// of it is logged or stored: contents are the user's (docs/architecture.md "Self-healing").
// Pure: no I/O.

export interface ToDeviceClue {
  sender: string;
  type: string;
  /** m.room.encrypted (Olm): the sending device's curve25519 identity key. */
  senderKey?: string;
  /** m.room_key_request / m.secret.request: requesting_device_id; verification: from_device. */
  deviceId?: string;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

export const OLM = "m.olm.v1.curve25519-aes-sha2";
/** Event types whose device id detection checks, and the content field that names it. */
const DEVICE_FIELD: Readonly<Record<string, string>> = {
  "m.room_key_request": "requesting_device_id",
  "m.secret.request": "requesting_device_id",
  "m.key.verification.request": "from_device",
  "m.key.verification.ready": "from_device",
  "m.key.verification.start": "from_device",
};

/** A curve25519 public key: 32 bytes, unpadded base64 (appendices §Unpadded Base64). */
const CURVE_KEY = /^[A-Za-z0-9+/]{43}$/;
/** A device id we will look up: printable ASCII, not absurdly long. */
const DEVICE_ID = /^[\x21-\x7E]{1,255}$/;
/** A user id we will look up (user-id.ts checks it fully later): bounded and printable. */
const SENDER = /^@[\x21-\x7E]{1,254}$/;
/** Events looked at per response: a body with more is not a client's normal traffic. */
export const MAX_EVENTS = 1000;

/** The clues in a `to_device` value (`{events: [...]}`); malformed events are skipped. */
export function cluesOf(toDevice: unknown): ToDeviceClue[] {
  const out: ToDeviceClue[] = [];
  if (!isObject(toDevice) || !Array.isArray(toDevice.events)) return out;
  for (const ev of toDevice.events.slice(0, MAX_EVENTS)) {
    const clue = clueOf(ev);
    if (clue) out.push(clue);
  }
  return out;
}

/** The clue of one event, or undefined when it is malformed or of a type not checked. */
export function clueOf(ev: unknown): ToDeviceClue | undefined {
  if (!isObject(ev) || !isObject(ev.content)) return undefined;
  const { sender, type, content } = ev;
  if (typeof sender !== "string" || !SENDER.test(sender) || typeof type !== "string") return undefined;
  if (type === "m.room.encrypted") {
    if (content.algorithm !== OLM || typeof content.sender_key !== "string" || !CURVE_KEY.test(content.sender_key))
      return undefined;
    return { sender, type, senderKey: content.sender_key };
  }
  const field = Object.hasOwn(DEVICE_FIELD, type) ? DEVICE_FIELD[type]! : undefined;
  if (!field) return undefined;
  // A cancellation names a device too, but asks nothing of it.
  if ((type === "m.room_key_request" || type === "m.secret.request") && content.action !== "request") return undefined;
  const id = content[field];
  if (typeof id !== "string" || !DEVICE_ID.test(id)) return undefined;
  return { sender, type, deviceId: id };
}

/** The to_device value of a sliding-sync `extensions` member (MSC3885's to_device extension). */
export function slidingToDevice(extensions: unknown): unknown {
  return isObject(extensions) ? extensions.to_device : undefined;
}
