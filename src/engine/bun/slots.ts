// A set of objects that each remember their slot in an array, for sets that change with every
// request. Under Bun, a Map or Set that deletes keeps the deleted entries' objects reachable
// for young-generation collections: under load every request's objects were promoted and
// collected only by a full collection, one after almost every young one (docs/performance.md,
// "Young collections no longer promote every request"; scripts/bench/map-churn.ts). Here a
// deleted slot holds `undefined`, and the array is rebuilt once dead slots outnumber live ones.

export interface Slotted {
  /** Where this object sits in its SlotSet, -1 when in none: the set keeps it. */
  slot: number;
}

export class SlotSet<T extends Slotted> {
  #items: (T | undefined)[] = [];
  #size = 0;
  #walking = 0;

  get size(): number {
    return this.#size;
  }

  has(x: T): boolean {
    return x.slot >= 0 && this.#items[x.slot] === x;
  }

  add(x: T): void {
    if (this.has(x)) return;
    if (this.#walking === 0 && this.#items.length > 2 * this.#size + 64) this.#compact();
    x.slot = this.#items.length;
    this.#items.push(x);
    this.#size++;
  }

  delete(x: T): boolean {
    if (!this.has(x)) return false;
    this.#items[x.slot] = undefined;
    x.slot = -1;
    this.#size--;
    return true;
  }

  /** Each member; `f` may add (not visited) and delete (a deleted one is not visited). */
  forEach(f: (x: T) => void): void {
    this.#walking++;
    try {
      const items = this.#items,
        n = items.length;
      for (let i = 0; i < n; i++) {
        const x = items[i];
        if (x !== undefined) f(x);
      }
    } finally {
      this.#walking--;
    }
  }

  #compact(): void {
    const kept: T[] = [];
    for (const x of this.#items) {
      if (x === undefined) continue;
      x.slot = kept.length;
      kept.push(x);
    }
    this.#items = kept;
  }
}
