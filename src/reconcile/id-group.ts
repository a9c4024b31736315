// IdGroup: one VIP's membership ids as a read-only map over its key texts, in a typed array.
import { MapView } from '../util/map-view';
import { StringIndex } from '../util/string-index';

/** How many positions past the expected one get() looks before it indexes the keys (a member removed or two). */
const NEAR = 4;

/**
 * A VIP's membership key -> backend id, read-only. The keys are the caller's array (shared: a VIP's member keys in
 * config order, which the desired-state builder memoises per VIP config) and the ids a Uint32Array beside them: ~4 KB
 * for 1,000 members where a Map<string, number> was ~27 KB (14 MB at 512 VIPs x 1000). Lookups come in key order
 * (a VIP's members one after another, pass after pass), so get() first tries the position after the last hit and a few
 * more, then the first few (a new pass), and only then builds an index of the keys (kept: a group is replaced whole
 * when its VIP changes). Every sync's pass once wrapped to the index: two 8 KiB arrays per VIP, 8 MB at 512 VIPs.
 */
export class IdGroup extends MapView<string, number> {
  readonly #keys: readonly string[];
  readonly #ids: Uint32Array;
  /** Where the next get() looks first. */
  #next = 0;
  #index: StringIndex | null = null;

  /** `keys` distinct, `ids[i]` the id of `keys[i]`; neither changed afterwards (the group holds both, uncopied). */
  private constructor(keys: readonly string[], ids: Uint32Array) {
    super();
    this.#keys = keys;
    this.#ids = ids;
  }

  /** The group of `map`'s entries (its order); its keys are `members` itself when they are the same keys in the same
   * order (no copy), else an array of their own. Ids must be integers in [0, 2^32). */
  static of(map: ReadonlyMap<string, number>, members?: readonly string[]): IdGroup {
    const n = map.size;
    const ids = new Uint32Array(n);
    let same = members !== undefined && members.length === n;
    let i = 0;
    for (const [key, id] of map) {
      if (!Number.isInteger(id) || id < 0 || id > 0xffffffff)
        throw new RangeError(`ids: ${JSON.stringify(key)} has id ${id}, not an integer in 0..2^32-1`);
      ids[i] = id;
      if (same && members![i] !== key) same = false;
      i++;
    }
    return new IdGroup(same ? members! : [...map.keys()], ids);
  }

  get size(): number {
    return this.#keys.length;
  }

  /** Whether it made an index of its keys (a lookup out of order did). */
  get indexed(): boolean {
    return this.#index !== null;
  }

  #position(key: string): number {
    let j = this.#near(key, this.#next);
    // A new pass over the keys in order starts again at the first (no index made for it).
    if (j < 0 && this.#next !== 0) j = this.#near(key, 0);
    if (j < 0) j = (this.#index ?? this.#indexKeys()).get(key) ?? -1;
    if (j >= 0) this.#next = j + 1;
    return j;
  }

  /** The position of `key` among the NEAR + 1 keys from `from`, or -1. */
  #near(key: string, from: number): number {
    const keys = this.#keys;
    const to = Math.min(keys.length - 1, from + NEAR);
    for (let j = from; j <= to; j++) if (keys[j] === key) return j;
    return -1;
  }

  /**
   * The index of the keys, made once (two 8 KiB arrays at 1000 keys). A method of its own: the closure over the keys
   * in #position made V8 allocate its context on every get() (~40 B), ~1.2 GB in 160 s of a mass flip at 512 x 1000
   * (the sampling heap profiler).
   */
  #indexKeys(): StringIndex {
    const keys = this.#keys;
    const index = new StringIndex((j) => keys[j]!);
    index.reserve(keys.length);
    for (let j = 0; j < keys.length; j++) index.set(keys[j]!, j);
    return (this.#index = index);
  }

  get(key: string): number | undefined {
    const j = this.#position(key);
    return j < 0 ? undefined : this.#ids[j];
  }

  *entries(): MapIterator<[string, number]> {
    const keys = this.#keys;
    const ids = this.#ids;
    for (let j = 0; j < keys.length; j++) yield [keys[j]!, ids[j]!];
  }

  override *values(): MapIterator<number> {
    yield* this.#ids;
  }

  get [Symbol.toStringTag](): string {
    return 'IdGroup';
  }
}
