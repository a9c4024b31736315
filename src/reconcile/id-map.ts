// A map from small non-negative integer ids to values, in an array indexed by id: what a Map<number, V> does for
// the reconciler's mirror of the backends map, without a hash-table entry per id (~46 bytes each: 23 MB at
// 512,000 backends; a slot here is 8 bytes up to the largest id). Backend ids are dense from 0 up (IdState
// allocates the lowest free ones) and below limits.maxBackends.
import { BOUNDS } from '../model/defaults';

/** ReadonlyMap<number, V> over an array by id; iterates in id order (a Map iterates in insertion order). */
export class IdMap<V> implements ReadonlyMap<number, V> {
  #slots: (V | undefined)[] = [];
  #size = 0;

  get size(): number {
    return this.#size;
  }

  get(id: number): V | undefined {
    return this.#slots[id];
  }

  has(id: number): boolean {
    return this.#slots[id] !== undefined;
  }

  /** Sets `id` (an integer 0 .. 2^32 - 2) to `v` (undefined is not a value here). */
  set(id: number, v: V): this {
    if (!Number.isInteger(id) || id < 0 || id > 0xfffffffe)
      throw new RangeError(`id: ${id} is not an integer in 0..4294967294`);
    if (v === undefined) throw new TypeError(`id ${id}: undefined is not a value of an IdMap`);
    const slots = this.#slots;
    if (slots[id] === undefined) this.#size++;
    // Grown one slot at a time from the end (packed), else filled up to id first (holes read as undefined).
    if (id > slots.length) for (let i = slots.length; i < id; i++) slots.push(undefined);
    slots[id] = v;
    return this;
  }

  delete(id: number): boolean {
    const slots = this.#slots;
    if (slots[id] === undefined) return false;
    slots[id] = undefined;
    this.#size--;
    // Trailing empty slots go (a shrinking id range gives its memory back).
    while (slots.length > 0 && slots[slots.length - 1] === undefined) slots.pop();
    return true;
  }

  clear(): void {
    this.#slots = [];
    this.#size = 0;
  }

  *entries(): MapIterator<[number, V]> {
    const slots = this.#slots;
    for (let id = 0; id < slots.length; id++) {
      const v = slots[id];
      if (v !== undefined) yield [id, v];
    }
  }

  *keys(): MapIterator<number> {
    for (const [id] of this.entries()) yield id;
  }

  *values(): MapIterator<V> {
    const slots = this.#slots;
    for (let id = 0; id < slots.length; id++) {
      const v = slots[id];
      if (v !== undefined) yield v;
    }
  }

  [Symbol.iterator](): MapIterator<[number, V]> {
    return this.entries();
  }

  forEach(f: (v: V, id: number, map: ReadonlyMap<number, V>) => void, thisArg?: unknown): void {
    for (const [id, v] of this.entries()) f.call(thisArg, v, id, this);
  }
}

/**
 * A set of backend ids, one bit each up to the largest id added: what the planner's Set<number> of wanted backend ids
 * does (512,000 of them at 512 x 1000: ~10 MB and as much again in the rehashes while it grew, on the first sync's
 * peak) in 64 KiB. Ids are below the largest limits.maxBackends (2^24: 2 MiB of bits at most). Add-only.
 */
export class IdSet {
  #words = new Uint32Array(0);
  #size = 0;

  get size(): number {
    return this.#size;
  }

  has(id: number): boolean {
    const w = id >>> 5;
    return id >>> 0 === id && w < this.#words.length && (this.#words[w]! & (1 << (id & 31))) !== 0;
  }

  /** Adds `id` (an integer 0 .. BOUNDS.maxBackends.max - 1). */
  add(id: number): this {
    if (!Number.isInteger(id) || id < 0 || id >= BOUNDS.maxBackends.max)
      throw new RangeError(`id: ${id} is not an integer in 0..${BOUNDS.maxBackends.max - 1}`);
    const w = id >>> 5;
    if (w >= this.#words.length) {
      const grown = new Uint32Array(Math.max(w + 1, this.#words.length * 2));
      grown.set(this.#words);
      this.#words = grown;
    }
    const bit = 1 << (id & 31);
    if ((this.#words[w]! & bit) === 0) {
      this.#words[w]! |= bit;
      this.#size++;
    }
    return this;
  }
}
