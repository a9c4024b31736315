// StringIndex: string keys -> 32-bit integers in two typed arrays, for hundreds of thousands of keys whose texts
// the caller already holds (the value leads back to its key: keyOf).

/** No entry (a value that is never stored). */
const EMPTY = -(2 ** 31);
/** The least room. */
const MIN_ROOM = 16;

/** FNV-1a of a string's UTF-16 code units, as a signed 32-bit integer. */
export function stringHash(s: string): number {
  let h = 0x811c9dc5 | 0;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h;
}

/**
 * A `Map<string, number>` whose keys the caller keeps: it stores each key's hash and value, not the key, and finds the
 * key of a value with `keyOf` (the health monitor's membership keys are its slots' own column). At 512,000 keys it is
 * two typed arrays of 2^20 entries (8 MB, outside V8's heap, no object for the collector to mark) where a Map was
 * ~20 MB. Open addressing with linear probing, at most three quarters full; a delete moves later entries of its run
 * back (no tombstones). Growing doubles the arrays and moves every entry by its stored hash (no key read): ~30-37 ms
 * in one insert at 393,216 entries here (a Map's rehash, or the largest shard's of a SpreadMap, was as long), so a
 * caller that knows how many come reserves room first.
 * Values are integers in [-(2^31 - 1), 2^31 - 1].
 */
export class StringIndex {
  #hashes = new Int32Array(MIN_ROOM);
  #values = new Int32Array(MIN_ROOM).fill(EMPTY);
  #mask = MIN_ROOM - 1;
  #size = 0;
  readonly #keyOf: (value: number) => string;

  /** `keyOf(v)`: the key stored with value v, for as long as it is stored (read on every lookup that meets v). */
  constructor(keyOf: (value: number) => string) {
    this.#keyOf = keyOf;
  }

  get size(): number {
    return this.#size;
  }

  /** Entries it has room for now (a power of two; at most three quarters of it is used). */
  get capacity(): number {
    return this.#mask + 1;
  }

  /** The slot holding `key`, or the empty slot where it would go (its hash `h`). */
  #find(key: string, h: number): number {
    const hashes = this.#hashes;
    const values = this.#values;
    const mask = this.#mask;
    for (let i = h & mask; ; i = (i + 1) & mask) {
      const v = values[i]!;
      if (v === EMPTY || (hashes[i] === h && this.#keyOf(v) === key)) return i;
    }
  }

  get(key: string): number | undefined {
    const v = this.#values[this.#find(key, stringHash(key))]!;
    return v === EMPTY ? undefined : v;
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  /** Sets key's value (`keyOf(value)` is `key` from now on). */
  set(key: string, value: number): this {
    if (!Number.isInteger(value) || value <= EMPTY || value > 2 ** 31 - 1)
      throw new RangeError(`StringIndex: value ${value} is not a 32-bit integer above ${EMPTY}`);
    const h = stringHash(key);
    let i = this.#find(key, h);
    if (this.#values[i] === EMPTY) {
      if (4 * (this.#size + 1) > 3 * (this.#mask + 1)) {
        this.#resize(2 * (this.#mask + 1));
        i = this.#find(key, h);
      }
      this.#size++;
      this.#hashes[i] = h;
    }
    this.#values[i] = value;
    return this;
  }

  delete(key: string): boolean {
    const hashes = this.#hashes;
    const values = this.#values;
    const mask = this.#mask;
    let i = this.#find(key, stringHash(key));
    if (values[i] === EMPTY) return false;
    this.#size--;
    // Backward shift: an entry later in the run whose home is not in (i, j] moves into the hole.
    for (let j = (i + 1) & mask; values[j] !== EMPTY; j = (j + 1) & mask) {
      const home = hashes[j]! & mask;
      const between = i <= j ? i < home && home <= j : i < home || home <= j;
      if (between) continue;
      hashes[i] = hashes[j]!;
      values[i] = values[j]!;
      i = j;
    }
    values[i] = EMPTY;
    return true;
  }

  /** Replaces every value v with map(v) (which must lead back to the same key: keyOf is read by later lookups). */
  remap(map: (value: number) => number): void {
    const values = this.#values.slice();
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (v === EMPTY) continue;
      const w = map(v);
      if (!Number.isInteger(w) || w <= EMPTY || w > 2 ** 31 - 1)
        throw new RangeError(
          `StringIndex.remap: value ${v} mapped to ${w}, not a 32-bit integer above ${EMPTY}`,
        );
      values[i] = w;
    }
    this.#values = values;
  }

  /** Every value, in no order. */
  *values(): Generator<number> {
    const values = this.#values;
    for (let i = 0; i < values.length; i++) if (values[i] !== EMPTY) yield values[i]!;
  }

  /**
   * Room for `n` entries in all without growing again, made now (a caller about to add many makes it in a turn of its
   * own: at 2^20 entries two new arrays are ~12 ms here, and moving 393,216 entries into them ~20-37 ms). Returns
   * whether it grew.
   */
  reserve(n: number): boolean {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`n: ${n} is not a non-negative integer`);
    let room = this.#mask + 1;
    while (4 * n > 3 * room) room *= 2;
    if (room === this.#mask + 1) return false;
    this.#resize(room);
    return true;
  }

  /**
   * Smaller arrays, the least that are at most 3/8 used (room to spare before the next growth), when they are at most
   * half of these (after many deletes); returns whether it shrank.
   */
  fit(): boolean {
    let room = MIN_ROOM;
    while (8 * this.#size > 3 * room) room *= 2;
    if (room >= this.#mask + 1) return false;
    this.#resize(room);
    return true;
  }

  #resize(room: number): void {
    const hashes = this.#hashes;
    const values = this.#values;
    const mask = room - 1;
    const nh = new Int32Array(room);
    const nv = new Int32Array(room).fill(EMPTY);
    for (let j = 0; j < values.length; j++) {
      const v = values[j]!;
      if (v === EMPTY) continue;
      const h = hashes[j]!;
      let i = h & mask;
      while (nv[i] !== EMPTY) i = (i + 1) & mask;
      nh[i] = h;
      nv[i] = v;
    }
    this.#hashes = nh;
    this.#values = nv;
    this.#mask = mask;
  }
}
