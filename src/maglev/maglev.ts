// Weighted Maglev table builder (NSDI'16 §3.4), versioned so every node and version builds the same table.
import { murmur3String } from './hash';

/**
 * Algorithm id: bump it whenever anything below changes the table for some input (hash, seeds, order,
 * weighting). Nodes that share this id build byte-identical tables from the same backend set.
 */
export const MAGLEV_ALGORITHM = 'peak-maglev-v1';
/** Seed of h1 (offset): ASCII "PKo1". */
export const MAGLEV_OFFSET_SEED = 0x504b6f31;
/** Seed of h2 (skip): ASCII "PKs1". */
export const MAGLEV_SKIP_SEED = 0x504b7331;
/** Default table size M: a prime, as in the paper. */
export const MAGLEV_DEFAULT_SIZE = 65537;
/** Table entry meaning "no backend" (the table is built from zero backends with positive weight). */
export const NO_BACKEND = 0xffffffff;
/** Largest table size accepted (a prime; 4 MiB of u32 slots). */
export const MAGLEV_MAX_SIZE = 1048573;

export interface MaglevBackend {
  /** Unique identity hashed into the permutation (the canonical backend address in PEAK-XDP). */
  name: string;
  /** Non-negative integer; 0 keeps the backend out of the table. */
  weight: number;
}

export interface BuildTableOptions {
  backends: readonly MaglevBackend[];
  /** Table size M: a prime (default 65537). */
  size?: number;
}

/** True if n is a prime (trial division; n up to 2^32). */
export function isPrime(n: number): boolean {
  if (!Number.isInteger(n) || n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

/** offset = h1(name) mod M and skip = h2(name) mod (M-1) + 1 for one backend. */
export function permutationParams(name: string, size: number): { offset: number; skip: number } {
  return {
    offset: murmur3String(name, MAGLEV_OFFSET_SEED) % size,
    skip: (murmur3String(name, MAGLEV_SKIP_SEED) % (size - 1)) + 1,
  };
}

/** Checks buildTable's input (size, unique non-empty names, weights) and returns the size; throws naming the field. */
export function checkTableInput(opts: Pick<BuildTableOptions, 'backends' | 'size'>): number {
  const size = opts.size ?? MAGLEV_DEFAULT_SIZE;
  if (!isPrime(size) || size < 3 || size > MAGLEV_MAX_SIZE)
    throw new RangeError(`size: ${size} is not a prime between 3 and ${MAGLEV_MAX_SIZE}`);
  const seen = new Set<string>();
  opts.backends.forEach((b, i) => {
    if (typeof b.name !== 'string' || b.name === '')
      throw new TypeError(`backends[${i}].name: ${JSON.stringify(b.name)} is not a non-empty string`);
    if (seen.has(b.name))
      throw new RangeError(`backends[${i}].name: ${JSON.stringify(b.name)} is a duplicate`);
    seen.add(b.name);
    if (!Number.isSafeInteger(b.weight) || b.weight < 0)
      throw new RangeError(`backends[${i}].weight: ${b.weight} is not a non-negative integer`);
  });
  return size;
}

/**
 * Builds a Maglev lookup table: entry s is the index (into `backends` as given) of the backend owning
 * slot s, or NO_BACKEND if no backend has a positive weight. Input order never changes the result.
 * Backends are sorted by name; in each round every backend adds its weight to a credit and takes one
 * turn (claims its next preferred free slot) when the credit reaches the largest weight.
 */
export function buildTable(opts: BuildTableOptions, into?: ArrayBuffer): Uint32Array {
  return build(opts, into, null);
}

/**
 * mapTable(buildTable(opts), as) in one pass: each slot holds its owner's value in `as` (`as.none` where no
 * backend has weight). Values above 2^31 - 1 are mapped after the build instead (the builder's slots are
 * int32, -1 for free).
 */
export function buildMappedTable(opts: BuildTableOptions, as: TableValues, into?: ArrayBuffer): Uint32Array {
  for (let i = 0; i < as.values.length; i++)
    if (as.values[i]! > 0x7fffffff) return mapTable(build(opts, into, null), as);
  return build(opts, into, as);
}

/** The table, built into `into` if given; slots hold member indices, or their values in `as`. */
function build(opts: BuildTableOptions, into: ArrayBuffer | undefined, as: TableValues | null): Uint32Array {
  const size = checkTableInput(opts);
  if (into !== undefined && into.byteLength !== size * 4)
    throw new RangeError(`into: ${into.byteLength} bytes is not ${size * 4} (4 per slot)`);
  // Int32 slots with -1 (NO_BACKEND's bit pattern) for free: V8 keeps the loop in small integers, where
  // Uint32 values above 2^31 would be doubles. The result is a Uint32Array over the same buffer (`into`, when
  // given: memory reused, e.g. a table the caller is done with).
  const table = (into === undefined ? new Int32Array(size) : new Int32Array(into)).fill(-1);
  // Members in name order (code-unit order; bytewise for ASCII names), remembering input positions. A loop, not
  // map().filter(): the optimized map() made an array of another hidden class than the one filter() had been seen
  // on, and every table worker's first optimized build was thrown away at once ("wrong map") and compiled again
  // (16-39 ms of the compiler's time per worker at a start).
  const order: { name: string; weight: number; index: number }[] = [];
  for (let i = 0; i < opts.backends.length; i++) {
    const b = opts.backends[i]!;
    if (b.weight > 0) order.push({ name: b.name, weight: b.weight, index: i });
  }
  order.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const n = order.length;
  const out = new Uint32Array(table.buffer);
  if (n === 0) return as === null ? out : out.fill(as.none);
  const pos = new Int32Array(n);
  const skip = new Int32Array(n);
  const weight = new Float64Array(n);
  // what a member's slots hold: its input position, or its value
  const index = new Int32Array(n);
  let maxWeight = 0;
  let equal = true;
  for (let i = 0; i < n; i++) {
    const b = order[i]!;
    const p = permutationParams(b.name, size);
    pos[i] = p.offset;
    skip[i] = p.skip;
    weight[i] = b.weight;
    index[i] = as === null ? b.index : as.values[b.index]!;
    if (b.weight > maxWeight) maxWeight = b.weight;
    if (b.weight !== order[0]!.weight) equal = false;
  }
  if (equal) fillEqual(table, pos, skip, index);
  else fillWeighted(table, pos, skip, index, weight, maxWeight);
  return out;
}

/**
 * Free slots left when the builders stop walking permutations and fill the rest by fillTail, for a table of `size`
 * slots: with k slots free a walk takes ~M/k steps per claim, while fillTail's claim looks at every free slot (~k/2
 * on average, each a multiplication and a division). The two meet near k = sqrt(M/2): 91 at 16,381 slots, 181 at
 * 65,537. A fixed 256 made a 16,381-slot table of 20 members 0.42-0.46 ms against 0.32-0.35 (k 48-96); at 65,537
 * any k from 48 to 256 measured alike.
 */
export function tailSlots(size: number): number {
  return Math.min(size, Math.max(1, Math.round(Math.sqrt(size / 2))));
}

/** Equal weights: every member takes a turn in every round (the credit rule reduces to that). */
function fillEqual(table: Int32Array, pos: Int32Array, skip: Int32Array, index: Int32Array): void {
  const walked = table.length - tailSlots(table.length);
  const last = walked > 0 ? walkEqual(table, pos, skip, index, walked) : -1;
  fillTail(table, pos, skip, index, last + 1, null);
}

/**
 * fillEqual's walks until `walked` slots are taken; returns the member that took the last one. The loop alone, with
 * nothing in it that runs only once: the optimizing compiler compiles it while it runs (on-stack replacement), with
 * the type feedback gathered so far, and code that had not run yet (the exit's arithmetic, the tail) threw the
 * optimized code away when reached (~30 ms of each of a worker's first tables at 65,537 slots, not ~2).
 */
function walkEqual(
  table: Int32Array,
  pos: Int32Array,
  skip: Int32Array,
  index: Int32Array,
  walked: number,
): number {
  const size = table.length;
  const n = pos.length;
  let filled = 0;
  for (;;)
    for (let i = 0; i < n; i++) {
      // Walk this member's permutation (offset + j*skip) mod M to its next free slot. The step is skip - M
      // (negative) and M is added back when c goes below 0: without a branch (size & (c >> 31)), since whether a
      // step wraps is a coin toss the CPU cannot predict (~25% of the build's time with `if (c >= size)`).
      let c = pos[i]!;
      const s = skip[i]! - size;
      while (table[c] !== -1) {
        c += s;
        c += size & (c >> 31);
      }
      table[c] = index[i]!;
      c += s;
      pos[i] = c + (size & (c >> 31));
      if (++filled === walked) return i;
    }
}

/** Weighted rounds: a member adds its weight to its credit and takes a turn when the credit reaches maxWeight. */
function fillWeighted(
  table: Int32Array,
  pos: Int32Array,
  skip: Int32Array,
  index: Int32Array,
  weight: Float64Array,
  maxWeight: number,
): void {
  const size = table.length;
  const n = pos.length;
  const credit = new Float64Array(n);
  const turn = (i: number): boolean => {
    credit[i]! += weight[i]!;
    if (credit[i]! < maxWeight) return false;
    credit[i]! -= maxWeight;
    return true;
  };
  const walked = size - tailSlots(size);
  let filled = 0;
  if (walked > 0)
    for (;;)
      for (let i = 0; i < n; i++) {
        credit[i]! += weight[i]!;
        if (credit[i]! < maxWeight) continue;
        credit[i]! -= maxWeight;
        let c = pos[i]!;
        const s = skip[i]! - size; // as in fillEqual: a negative step, wrapped without a branch
        while (table[c] !== -1) {
          c += s;
          c += size & (c >> 31);
        }
        table[c] = index[i]!;
        c += s;
        pos[i] = c + (size & (c >> 31));
        if (++filled === walked) return fillTail(table, pos, skip, index, i + 1, turn);
      }
  fillTail(table, pos, skip, index, 0, turn);
}

/**
 * The same claims as the walks above, for the last free slots, from member `first` of the current round on
 * (`turn`: whether member i takes a turn when visited; null: every visit is one). A member's next claim is the
 * free slot it reaches first on its permutation from `pos`: every slot it passed is taken, so that is the free
 * slot e with the fewest steps t = (e - pos) / skip mod M (M is prime: skip has an inverse). Computed for each
 * free slot instead of walked step by step.
 */
function fillTail(
  table: Int32Array,
  pos: Int32Array,
  skip: Int32Array,
  index: Int32Array,
  first: number,
  turn: ((i: number) => boolean) | null,
): void {
  const size = table.length;
  const n = pos.length;
  const free = new Int32Array(tailSlots(size));
  // skip's inverse mod M per member, computed when first needed (0: not yet; an inverse is never 0)
  const inverse = new Float64Array(n);
  let left = freeSlots(table, free);
  for (let i = first; left > 0; i = i + 1 === n ? 0 : i + 1) {
    if (i >= n) i = 0;
    if (turn !== null && !turn(i)) continue;
    const c = pos[i]!;
    let inv = inverse[i]!;
    if (inv === 0) inv = inverse[i] = modInverse(skip[i]!, size);
    let best = size;
    let at = 0;
    for (let k = 0; k < left; k++) {
      let d = free[k]! - c;
      if (d < 0) d += size;
      // t = d * inv mod M, exact: the product is below 2^40, the quotient's floor is off by one at most
      const x = d * inv;
      let t = x - Math.floor(x / size) * size;
      if (t < 0) t += size;
      else if (t >= size) t -= size;
      if (t < best) {
        best = t;
        at = k;
      }
    }
    const e = free[at]!;
    table[e] = index[i]!;
    free[at] = free[--left]!;
    const next = e + skip[i]!;
    pos[i] = next >= size ? next - size : next;
  }
}

/**
 * Writes the free slots' positions into `free` (ascending) and returns their count. Its own function for the reason
 * walkEqual is one: inside fillTail, this scan of every slot was compiled on its own (on-stack replacement) before
 * the claims after it had ever run, and the first claim threw that code away ("insufficient type feedback"), in
 * each table worker's first tables.
 */
function freeSlots(table: Int32Array, free: Int32Array): number {
  let left = 0;
  for (let s = 0; s < table.length; s++) if (table[s] === -1) free[left++] = s;
  return left;
}

/** a^-1 mod m for a prime m and 0 < a < m (extended Euclid). */
function modInverse(a: number, m: number): number {
  // plain temporaries: unoptimized code (a thread's first tables) runs array destructuring through the iterator
  // protocol, ~0.2 ms per member
  let r0 = m;
  let r1 = a;
  let s0 = 0;
  let s1 = 1;
  while (r1 !== 0) {
    const q = Math.floor(r0 / r1);
    const r = r0 - q * r1;
    r0 = r1;
    r1 = r;
    const t = s0 - q * s1;
    s0 = s1;
    s1 = t;
  }
  return s0 < 0 ? s0 + m : s0;
}

/** What a built table's member indices become: `values[i]` for member i, `none` for NO_BACKEND. */
export interface TableValues {
  values: Uint32Array;
  none: number;
}

/** Rewrites a built table in place, member index -> `as.values[index]` (NO_BACKEND -> `as.none`). */
export function mapTable(table: Uint32Array, as: TableValues): Uint32Array {
  const { values, none } = as;
  for (let s = 0; s < table.length; s++) {
    const i = table[s]!;
    table[s] = i === NO_BACKEND ? none : values[i]!;
  }
  return table;
}

/** A byte per id from the smallest skipped one to the largest (backend ids are below 2^24: limits.maxBackends), reused
 * by every redirectSkipped call and cleared after it: a Set lookup per slot cost 1.3 ms per 65,537-slot table,
 * this ~0.15 ms. */
let skipMask = new Uint8Array(0);
const MASK_KEPT = 1 << 16;

/**
 * Rewrites each slot whose id is in `skip` to the first id after it (wrapping) that is not: what unbounded
 * forward probing from that slot picks. Slots of other ids are untouched. With every id skipped (or none) the
 * table is returned as it is (the datapath then finds no backend, as before). In place, or into `out` (a
 * table of the same length: then `table` is left as it is and `out` returned, every slot written). `skip`: the ids
 * (a Set or a list; an id listed twice is as once).
 */
export function redirectSkipped(table: Uint32Array, skip: Iterable<number>, out?: Uint32Array): Uint32Array {
  const m = table.length;
  const into = out ?? table;
  if (into.length !== m) throw new RangeError(`out: length ${into.length} is not the table's ${m}`);
  let lo = Infinity;
  let hi = -1;
  for (const id of skip) {
    if (id < lo) lo = id;
    if (id > hi) hi = id;
  }
  const n = hi - lo + 1; // skipped id x is mask[x - lo]; an id outside lo..hi wraps to >= n unsigned
  const some = hi >= 0;
  // kept between calls up to 64 KiB; a wider range (ids far apart) gets its own for this call
  if (some && n > skipMask.length && n <= MASK_KEPT) skipMask = new Uint8Array(MASK_KEPT);
  const mask = n <= skipMask.length ? skipMask : new Uint8Array(n);
  for (const id of skip) mask[id - lo] = 1;
  try {
    let anchor = -1;
    if (some)
      for (let s = m - 1; s >= 0; s--) {
        const k = (table[s]! - lo) >>> 0;
        if (!(k < n && mask[k] === 1)) {
          anchor = s;
          break;
        }
      }
    if (anchor < 0) {
      if (into !== table) into.set(table);
      return into;
    }
    // Walk backwards once around the ring from the last kept slot, carrying the nearest kept id ahead.
    let carry = table[anchor]!;
    into[anchor] = carry;
    for (let s = anchor - 1; s >= 0; s--) {
      const id = table[s]!;
      const k = (id - lo) >>> 0;
      if (k < n && mask[k] === 1) into[s] = carry;
      else into[s] = carry = id;
    }
    for (let s = m - 1; s > anchor; s--) {
      const id = table[s]!;
      const k = (id - lo) >>> 0;
      if (k < n && mask[k] === 1) into[s] = carry;
      else into[s] = carry = id;
    }
    return into;
  } finally {
    for (const id of skip) mask[id - lo] = 0;
  }
}

/** Slots per backend index (length = number of backends). */
export function slotCounts(table: Uint32Array, backends: number): Uint32Array {
  const counts = new Uint32Array(backends);
  for (let s = 0; s < table.length; s++) {
    const b = table[s]!;
    if (b !== NO_BACKEND) counts[b]!++;
  }
  return counts;
}

/** Fraction of slots whose owner differs between two tables of owner names. */
export function changedFraction(before: readonly string[], after: readonly string[]): number {
  if (before.length !== after.length)
    throw new RangeError(`tables differ in size: ${before.length} and ${after.length}`);
  let changed = 0;
  for (let s = 0; s < before.length; s++) if (before[s] !== after[s]) changed++;
  return before.length === 0 ? 0 : changed / before.length;
}

/** Maps a table of indices to the owner names (NO_BACKEND becomes ""). */
export function tableNames(table: Uint32Array, backends: readonly MaglevBackend[]): string[] {
  const out = new Array<string>(table.length);
  for (let s = 0; s < table.length; s++) {
    const b = table[s]!;
    out[s] = b === NO_BACKEND ? '' : backends[b]!.name;
  }
  return out;
}

export interface ProbeForwardOptions {
  /** Table size M (0: no table, nothing is probed). */
  size: number;
  /** The table's entry at a slot (0..size-1). */
  entry: (slot: number) => number;
  /** The slot looked at first (taken mod size). */
  start: number;
  /** Slots looked at, the first included, before giving up (the datapath's PEAK_MAX_PROBES). */
  probes: number;
  /** True when the entry may take a new flow. */
  usable: (entry: number) => boolean;
}

/**
 * The one model of the datapath's forward probing (bpf/select.h peak_maglev_pick): the first usable entry of
 * slots start, start+1, ... (mod size), at most `probes` of them; null when none is (the packet is dropped).
 */
export function probeForward(o: ProbeForwardOptions): number | null {
  const m = o.size;
  if (m === 0) return null;
  let s = o.start % m;
  for (let i = 0; i < o.probes; i++) {
    const e = o.entry(s);
    if (o.usable(e)) return e;
    s = s + 1 === m ? 0 : s + 1;
  }
  return null;
}

export interface ProbeOptions {
  table: Uint32Array;
  /** Per backend index: true if the datapath skips it for new flows (down or draining). */
  skipped: (index: number) => boolean;
  /** Slots looked at from the hashed slot (itself included) before giving up. */
  probeLimit: number;
}

/**
 * probeForward over a table of backend indices (buildTable's output): the index a new flow hashed to `slot`
 * gets, NO_BACKEND if none qualifies within probeLimit slots.
 */
export function probeBackend(opts: ProbeOptions, slot: number): number {
  const { table, skipped, probeLimit } = opts;
  const picked = probeForward({
    size: table.length,
    entry: (s) => table[s]!,
    start: slot,
    probes: probeLimit,
    usable: (b) => b !== NO_BACKEND && !skipped(b),
  });
  return picked ?? NO_BACKEND;
}
