// SpreadMap: a Map of string keys held in four shards of unequal shares, so that no insert rehashes all of it.

/**
 * Buckets (of 32, by spreadBucket) per shard, in two layouts whose shares all differ (3/32 to 13/32): two maps that
 * grow together (the health monitor's memberships and probes: one probe per membership where no two share a backend,
 * and the keys end alike) then reach their shards' powers of two at different sizes too.
 */
export const SPREAD_LAYOUTS = {
  a: [3, 6, 10, 13],
  b: [4, 7, 9, 12],
} as const;

const BUCKETS = 32;

function shardOf(layout: readonly number[]): Uint8Array {
  const t = new Uint8Array(BUCKETS);
  let b = 0;
  layout.forEach((n, s) => t.fill(s, b, (b += n)));
  return t;
}

const SHARD_OF = { a: shardOf(SPREAD_LAYOUTS.a), b: shardOf(SPREAD_LAYOUTS.b) };

/**
 * Which of 32 buckets a key falls in: its length and last three characters, mixed by one multiplication (the top five
 * bits of a Fibonacci hash). A few ALU operations, no pass over the key: keys that differ in their tail (addresses,
 * membership keys ending in one) spread evenly.
 */
export function spreadBucket(key: string): number {
  const n = key.length;
  const tail =
    key.charCodeAt(n - 1) | 0 | ((key.charCodeAt(n - 2) | 0) << 8) | ((key.charCodeAt(n - 3) | 0) << 16);
  return Math.imul(tail ^ (n << 24), 0x9e3779b1) >>> 27;
}

/**
 * A `Map<string, V>` for hundreds of thousands of keys that must never hold the event loop long. V8 grows a Map
 * by rehashing all of it in the one insert that finds it full, at each power of two: ~45-70 ms at 262,144 keys on
 * this VM (most of it the first touch of the new table), ~90 ms at 524,288, inside one event-loop turn. Split in
 * four shards of unequal shares (SPREAD_LAYOUTS), the shards reach their powers of two at different sizes, each
 * rehash a fraction of the whole's. Only what its users need of a Map: get, set, has, delete, size, values.
 */
export class SpreadMap<V> {
  readonly #shards: Map<string, V>[] = [new Map(), new Map(), new Map(), new Map()];
  readonly #shardOf: Uint8Array;

  constructor(layout: keyof typeof SPREAD_LAYOUTS = 'a') {
    this.#shardOf = SHARD_OF[layout];
  }

  #of(key: string): Map<string, V> {
    return this.#shards[this.#shardOf[spreadBucket(key)]!]!;
  }

  get(key: string): V | undefined {
    return this.#of(key).get(key);
  }

  has(key: string): boolean {
    return this.#of(key).has(key);
  }

  set(key: string, value: V): this {
    this.#of(key).set(key, value);
    return this;
  }

  delete(key: string): boolean {
    return this.#of(key).delete(key);
  }

  get size(): number {
    let n = 0;
    for (const s of this.#shards) n += s.size;
    return n;
  }

  /** Every value, shard by shard (not in insertion order across shards). */
  *values(): Generator<V> {
    for (const s of this.#shards) yield* s.values();
  }

  /** Keys per shard (for tests and benchmarks). */
  shardSizes(): number[] {
    return this.#shards.map((s) => s.size);
  }
}
