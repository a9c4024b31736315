// Which Maglev tables name which backend ids: reference counts kept as tables come and go, so "is this
// backend still used?" is a map lookup, not a scan of every table (65537 slots each).

/** Ids up to this are counted in a dense array (limits.maxBackends is at most 2^24); larger ones in a Map. */
const DENSE_MAX_ID = (1 << 24) - 1;

/** Ids up to this are de-duplicated with a stamp array (4 bytes per id, grown on demand); larger ones by a Set. */
const STAMP_MAX_ID = 1 << 22;
let stamps = new Uint32Array(0);
let stamp = 0;

/** The distinct ids a table names (0, "no backend", left out), ascending. One pass over the table. */
export function tableMembers(table: Uint32Array): Uint32Array {
  // A fresh stamp per call: no clearing between tables (65537 slots cost one pass, no hashing).
  if (++stamp === 0xffffffff) {
    stamps.fill(0);
    stamp = 1;
  }
  const out: number[] = [];
  for (let s = 0; s < table.length; s++) {
    const id = table[s]!;
    if (id === 0) continue;
    if (id >= stamps.length) {
      if (id > STAMP_MAX_ID) return membersBySet(table);
      const grown = new Uint32Array(Math.max(id + 1, 2 * stamps.length));
      grown.set(stamps); // keeps this call's marks
      stamps = grown;
    }
    if (stamps[id] !== stamp) {
      stamps[id] = stamp;
      out.push(id);
    }
  }
  return Uint32Array.from(out).sort();
}

/** tableMembers for tables naming ids too large for the stamp array. */
function membersBySet(table: Uint32Array): Uint32Array {
  const seen = new Set(table);
  seen.delete(0);
  return Uint32Array.from(seen).sort();
}

/**
 * Reference counts of backend ids over a set of tables keyed by VIP id. A table's members are counted once
 * per table (not per slot): `count(id)` is the number of tables that name `id`.
 */
export class TableRefs {
  readonly #members = new Map<number, Uint32Array>();
  /** Count per id, indexed by id (backend ids are small: below limits.maxBackends, at most 2^24), grown on
   * demand; a Map was ~0.5 ms per 1,000-member table replaced at 512k ids. */
  #refs = new Uint32Array(0);
  /** Counts of ids past DENSE_MAX_ID (only a table read back from a foreign or damaged map names such ids). */
  readonly #sparse = new Map<number, number>();

  /** Records (or replaces) the table of `vipId` by its distinct member ids. */
  set(vipId: number, members: Uint32Array): void {
    this.drop(vipId);
    this.#members.set(vipId, members);
    let max = -1;
    for (let i = 0; i < members.length; i++)
      if (members[i]! > max && members[i]! <= DENSE_MAX_ID) max = members[i]!;
    if (max >= this.#refs.length) {
      const grown = new Uint32Array(Math.min(DENSE_MAX_ID + 1, Math.max(max + 1, 2 * this.#refs.length)));
      grown.set(this.#refs);
      this.#refs = grown;
    }
    const refs = this.#refs;
    for (let i = 0; i < members.length; i++) {
      const id = members[i]!;
      if (id <= DENSE_MAX_ID) refs[id]!++;
      else this.#sparse.set(id, (this.#sparse.get(id) ?? 0) + 1);
    }
  }

  /** Forgets the table of `vipId` (no-op when none is recorded). */
  drop(vipId: number): void {
    const old = this.#members.get(vipId);
    if (old === undefined) return;
    this.#members.delete(vipId);
    const refs = this.#refs;
    for (let i = 0; i < old.length; i++) {
      const id = old[i]!;
      if (id <= DENSE_MAX_ID) refs[id]!--;
      else if (this.#sparse.get(id) === 1) this.#sparse.delete(id);
      else this.#sparse.set(id, this.#sparse.get(id)! - 1);
    }
  }

  /** The recorded table's distinct member ids, ascending (undefined: none recorded). */
  members(vipId: number): Uint32Array | undefined {
    return this.#members.get(vipId);
  }

  /** True when the table of `vipId` is recorded. */
  has(vipId: number): boolean {
    return this.#members.has(vipId);
  }

  /** How many recorded tables name `id`. */
  count(id: number): number {
    if (!Number.isInteger(id) || id < 0) return 0;
    return id < this.#refs.length ? this.#refs[id]! : (this.#sparse.get(id) ?? 0);
  }

  /** Some VIP id whose recorded table names `id`, or null (for error messages; O(tables)). */
  holder(id: number): number | null {
    if (this.count(id) === 0) return null;
    for (const [vipId, m] of this.#members) if (sortedIncludes(m, id)) return vipId;
    return null;
  }

  /** VIP ids with a recorded table. */
  vipIds(): IterableIterator<number> {
    return this.#members.keys();
  }

  clear(): void {
    this.#members.clear();
    this.#refs = new Uint32Array(0);
    this.#sparse.clear();
  }
}

function sortedIncludes(a: Uint32Array, x: number): boolean {
  let lo = 0;
  let hi = a.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const v = a[mid]!;
    if (v === x) return true;
    if (v < x) lo = mid + 1;
    else hi = mid - 1;
  }
  return false;
}
