// Writes a refresh makes before its answer that the fetch's fan-out must see: the requester's
// own devices become trackers of the target (routes/refresh.ts), and the fan-out reads the
// trackers to know whom to tell (delivery.ts). On a store across the network the two are
// separate connections, so the fan-out waits for the writes booked before it; one booked after
// it began is told so, and its caller tells those devices itself.
export class Bookings {
  readonly #pending = new Map<string, Promise<unknown>[]>();
  readonly #sealed = new Set<string>();

  /** Books a write for target's running fetch; false when its fan-out has already begun. */
  add(target: string, write: void | Promise<unknown>): boolean {
    if (this.#sealed.has(target)) return false;
    if (write instanceof Promise) {
      const list = this.#pending.get(target);
      if (list) list.push(write);
      else this.#pending.set(target, [write]);
    }
    return true;
  }

  /** The fan-out of target's fetch begins: later bookings are too late; the earlier ones land first. */
  async seal(target: string): Promise<void> {
    this.#sealed.add(target);
    const list = this.#pending.get(target) ?? [];
    this.#pending.delete(target);
    await Promise.allSettled(list);
  }

  /** target's fetch is over. */
  end(target: string): void {
    this.#sealed.delete(target);
    this.#pending.delete(target);
  }
}
