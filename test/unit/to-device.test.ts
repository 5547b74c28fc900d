// What detection reads of to-device events (src/delivery/to-device-clues.ts) and how it reads
// them from a streaming /sync body (to-device-watch.ts): only sender, type and one id; malformed
// events skipped; any chunking gives the same clues; bodies without checked types not scanned.
import { describe, expect, test } from "vitest";
import { cluesOf } from "../../src/delivery/to-device-clues.ts";
import { bothObservers, ToDeviceWatch } from "../../src/delivery/to-device-watch.ts";
import { ReportedWatch } from "../../src/delivery/json/reported-watch.ts";
import type { ToDeviceClue } from "../../src/delivery/to-device-clues.ts";

/** Detach a read's memory, as the front end frees a read nobody keeps (flow.ts release). */
const free = (b: Uint8Array) => void (b.buffer as ArrayBuffer & { transfer(n: number): ArrayBuffer }).transfer(0);
const KEY = Buffer.alloc(32, 1).toString("base64").replace(/=+$/, "");
const olm = (sender: unknown, key: unknown) => ({
  sender,
  type: "m.room.encrypted",
  content: { algorithm: "m.olm.v1.curve25519-aes-sha2", sender_key: key, ciphertext: { secret: "SECRET-CONTENT" } },
});

describe("clues of to-device events", () => {
  test("each checked type gives its one id; contents are not kept", () => {
    const clues = cluesOf({
      events: [
        olm("@b:r.test", KEY),
        {
          sender: "@b:r.test",
          type: "m.room_key_request",
          content: { action: "request", requesting_device_id: "D1", body: { secret: "SECRET-CONTENT" } },
        },
        {
          sender: "@b:r.test",
          type: "m.secret.request",
          content: { action: "request", requesting_device_id: "D2", name: "m.cross_signing.master" },
        },
        { sender: "@b:r.test", type: "m.key.verification.request", content: { from_device: "D3" } },
        { sender: "@b:r.test", type: "m.key.verification.ready", content: { from_device: "D4" } },
        { sender: "@b:r.test", type: "m.key.verification.start", content: { from_device: "D5" } },
        { sender: "@b:r.test", type: "m.key.verification.mac", content: { from_device: "D6" } },
        { sender: "@b:r.test", type: "m.dummy", content: {} },
      ],
    });
    expect(clues).toEqual([
      { sender: "@b:r.test", type: "m.room.encrypted", senderKey: KEY },
      { sender: "@b:r.test", type: "m.room_key_request", deviceId: "D1" },
      { sender: "@b:r.test", type: "m.secret.request", deviceId: "D2" },
      { sender: "@b:r.test", type: "m.key.verification.request", deviceId: "D3" },
      { sender: "@b:r.test", type: "m.key.verification.ready", deviceId: "D4" },
      { sender: "@b:r.test", type: "m.key.verification.start", deviceId: "D5" },
    ]);
    expect(JSON.stringify(clues)).not.toContain("SECRET-CONTENT");
  });

  test("malformed, forged and absurd events are skipped without throwing", () => {
    const bad = [
      null,
      1,
      "x",
      [],
      {},
      { sender: "@b:r.test" },
      { sender: "@b:r.test", type: "m.room.encrypted", content: "x" },
      olm("@b:r.test", "not base64!"),
      olm("@b:r.test", `${KEY}=`),
      olm("@b:r.test", KEY.slice(1)),
      olm("@b:r.test", null),
      olm(42, KEY),
      olm("nobody", KEY),
      olm(`@${"x".repeat(300)}:r.test`, KEY),
      {
        sender: "@b:r.test",
        type: "m.room.encrypted",
        content: { algorithm: "m.megolm.v1.aes-sha2", sender_key: KEY },
      },
      {
        sender: "@b:r.test",
        type: "m.room_key_request",
        content: { action: "request_cancellation", requesting_device_id: "D" },
      },
      {
        sender: "@b:r.test",
        type: "m.room_key_request",
        content: { action: "request", requesting_device_id: "D".repeat(256) },
      },
      {
        sender: "@b:r.test",
        type: "m.room_key_request",
        content: { action: "request", requesting_device_id: "has space" },
      },
      { sender: "@b:r.test", type: "m.key.verification.start", content: { from_device: ["D"] } },
      { sender: "@b:r.test", type: "__proto__", content: { from_device: "D" } },
      { sender: "@b:r.test", type: "constructor", content: { from_device: "D" } },
    ];
    expect(cluesOf({ events: bad })).toEqual([]);
    for (const v of [undefined, null, [], "x", { events: "x" }, { events: {} }]) expect(cluesOf(v)).toEqual([]);
  });

  test("at most 1000 events are looked at", () => {
    expect(cluesOf({ events: Array.from({ length: 5000 }, () => olm("@b:r.test", KEY)) })).toHaveLength(1000);
  });
});

describe("reading to_device from a streaming body", () => {
  const body = Buffer.from(
    JSON.stringify({
      next_batch: "n",
      rooms: {
        join: { "!r:x": { timeline: { events: [{ type: "m.room.message", content: { body: 'to_device \\" {' } }] } } },
      },
      to_device: { events: [olm("@b:r.test", KEY)] },
    }),
  );
  const read = (chunks: Buffer[], flavour: "sync" | "sliding" = "sync") =>
    new Promise<ToDeviceClue[]>((resolve) => {
      const w = new ToDeviceWatch(resolve, flavour);
      for (const c of chunks) {
        // A read not kept is freed at once, as the front end does (flow.ts release).
        const own = new Uint8Array(c);
        if (!w.data(own, 0, own.length)) free(own);
      }
      w.end();
      setTimeout(() => resolve([]), 50);
    });

  test("every split of the body gives the same clue", async () => {
    for (let size = 1; size < body.length; size += 7) {
      const chunks = Array.from({ length: Math.ceil(body.length / size) }, (_, i) =>
        body.subarray(i * size, (i + 1) * size),
      );
      expect(await read(chunks)).toEqual([{ sender: "@b:r.test", type: "m.room.encrypted", senderKey: KEY }]);
    }
  });

  test("sliding sync's extensions.to_device", async () => {
    const sliding = Buffer.from(
      JSON.stringify({
        pos: "1",
        extensions: {
          to_device: {
            next_batch: "t",
            events: [
              {
                sender: "@b:r.test",
                type: "m.secret.request",
                content: { action: "request", requesting_device_id: "Z" },
              },
            ],
          },
        },
      }),
    );
    expect(await read([sliding], "sliding")).toEqual([
      { sender: "@b:r.test", type: "m.secret.request", deviceId: "Z" },
    ]);
  });

  test("the homeserver's own device_lists.changed is reported too (sync and sliding)", async () => {
    const changed = (body: unknown, flavour: "sync" | "sliding") =>
      new Promise<string[]>((resolve) => {
        const w = new ToDeviceWatch(() => {}, flavour, resolve);
        const b = Buffer.from(JSON.stringify(body));
        w.data(b, 0, b.length);
        w.end();
        setTimeout(() => resolve([]), 50);
      });
    expect(
      await changed({ next_batch: "n", device_lists: { changed: ["@a:r", 5, "@b:r"], left: [] } }, "sync"),
    ).toEqual(["@a:r", "@b:r"]);
    expect(
      await changed({ pos: "p", extensions: { e2ee: { device_lists: { changed: ["@c:r"] } } } }, "sliding"),
    ).toEqual(["@c:r"]);
    expect(await changed({ next_batch: "n", device_lists: { changed: "x" } }, "sync")).toEqual([]);
  });

  test("with the overlays' watch as well, one reader tells both the homeserver's changed, and the clues", async () => {
    const doc = Buffer.from(
      JSON.stringify({
        next_batch: "n",
        device_lists: { changed: ["@a:r"] },
        to_device: { events: [olm("@b:r.test", KEY)] },
      }),
    );
    const told: Record<string, unknown> = {};
    const w = bothObservers(
      new ReportedWatch((users) => (told.overlays = users)),
      new ToDeviceWatch(
        (clues) => (told.clues = clues),
        "sync",
        (users) => (told.views = users),
      ),
    )!;
    for (let at = 0; at < doc.length; at += 7) w.data(doc, at, Math.min(doc.length, at + 7));
    w.end();
    await new Promise((r) => setTimeout(r, 20));
    expect(told).toEqual({
      overlays: ["@a:r"],
      views: ["@a:r"],
      clues: [{ sender: "@b:r.test", type: "m.room.encrypted", senderKey: KEY }],
    });
  });

  test("a body without a checked type, or not JSON, reports nothing", async () => {
    expect(
      await read([Buffer.from('{"to_device":{"events":[{"sender":"@b:r.test","type":"m.dummy","content":{}}]}}')]),
    ).toEqual([]);
    expect(await read([Buffer.from("m.olm.v1.curve25519-aes-sha2 is not json")])).toEqual([]);
    expect(
      await read([Buffer.from('{"to_device":{"events":[{"sender":"@b:r.test","type":"m.room.encrypted"')]),
    ).toEqual([]);
  });
});
