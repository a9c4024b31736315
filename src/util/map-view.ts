// MapView: a read-only Map over a class's own storage: it gives size, get() and entries(); the rest follows from them.

/** A ReadonlyMap whose subclass gives `size`, `get` and `entries` (a stored value is never undefined) and its tag;
 * has, keys, values, iteration and forEach are made from them (a subclass may override them with quicker ones). */
export abstract class MapView<K, V> implements ReadonlyMap<K, V> {
  abstract get size(): number;
  abstract get(key: K): V | undefined;
  abstract entries(): MapIterator<[K, V]>;
  abstract get [Symbol.toStringTag](): string;

  has(key: K): boolean {
    return this.get(key) !== undefined;
  }

  *keys(): MapIterator<K> {
    for (const [k] of this.entries()) yield k;
  }

  *values(): MapIterator<V> {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator](): MapIterator<[K, V]> {
    return this.entries();
  }

  forEach(fn: (value: V, key: K, map: ReadonlyMap<K, V>) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) fn.call(thisArg, v, k, this);
  }
}
