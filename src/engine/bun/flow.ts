// Writes with backpressure on Bun sockets. Bun's socket.write() is unbuffered: it returns how
// many bytes the kernel took, and the rest is ours to keep until `drain`. Callers stop reading
// from the other side (socket.pause()) while anything is queued, so at most about one read's
// worth of bytes waits here per direction: a slow reader is never buffered in memory.
import type { Socket } from "bun";

export class Outbox {
  // Made on the first partial write: most exchanges never have one.
  #queue: Buffer[] | undefined;
  #bytes = 0;

  get bytes(): number {
    return this.#bytes;
  }

  /** Write or queue `buf`; true when everything is already with the kernel. */
  send(socket: Socket<unknown> | undefined, buf: Buffer): boolean {
    if (buf.length === 0) return this.#bytes === 0;
    if (socket === undefined || this.#bytes > 0) return this.#queueUp(buf);
    const n = socket.write(buf);
    if (n === buf.length) return true;
    return this.#queueUp(n > 0 ? buf.subarray(n) : buf);
  }

  /** On `drain`: write what is queued; true when the queue is empty. */
  flush(socket: Socket<unknown>): boolean {
    const queue = this.#queue;
    while (queue !== undefined && queue.length > 0) {
      const buf = queue[0]!;
      const n = socket.write(buf);
      if (n < 0) return false; // closed: the close handler cleans up
      this.#bytes -= Math.max(0, n);
      if (n < buf.length) {
        queue[0] = buf.subarray(n);
        return false;
      }
      queue.shift();
    }
    return true;
  }

  clear(): void {
    this.#queue = undefined;
    this.#bytes = 0;
  }

  #queueUp(buf: Buffer): false {
    (this.#queue ??= []).push(buf);
    this.#bytes += buf.length;
    return false;
  }
}

/**
 * Give a received buffer's memory back now, once it is written whole and nothing else holds it.
 * Bun hands every socket read its own ArrayBuffer, and the collector frees those only after
 * some 32 MB of them: a streamed body grew RSS by that much. Detaching (`transfer(0)`) frees
 * the bytes at once. Only a buffer that is its ArrayBuffer's sole view is touched.
 */
export function release(buf: Buffer): void {
  const ab = buf.buffer as ArrayBuffer & { transfer?: (length: number) => ArrayBuffer };
  if (buf.byteOffset === 0 && buf.byteLength === ab.byteLength && ab.byteLength > 0) ab.transfer?.(0);
}
