// DueLanes: items queued by due time in a few lanes (the health monitor's quick, slow and settled probes), earliest
// first in each lane, equal times in queueing order. An item is in one lane at a time or in none.
//
// One store for every lane: an item is its id (add() gives it, delete() frees it; the caller keeps what the item is in
// columns of its own, indexed by the id, and renumbers them with the store: onRenumber). Its due time, queueing order
// and place live in typed arrays indexed by the id, and each lane is a binary heap of ids (4 bytes an entry). An item that moves
// from one lane to another moves 4 bytes: at a start every probe is queued as slow and moves to the quick lane with
// its first result; with a queue of its own per lane (a heap of at/seq/slot/item entries, 28 bytes each), the slow
// queue kept its room for every probe while the quick one grew to hold them again (the daemon at 512 x 1000 with
// checks: +15 MB of RSS over the first minute of checks). Requeueing moves the entry in place: no stale entries.
// A heap of entry objects cost a 64-byte object per queued start and a pointer chase per comparison: with 51,200
// timing-out targets (18,000 starts a second) its pops were 16% of the monitor's CPU (profiled).

/** Not queued (pos). */
const NONE = -1;
/** laneOf of an id not held (free, or never handed out). */
const FREE = 255;
/** The least room of any array. */
const MIN_ROOM = 64;
/** Room for this many times the entries after a lane's heap shrinks, or the ids are renumbered. */
const SHRUNK_ROOM = 1.25;
/** fit() cuts the id arrays once they hold room for more than this many times the items. */
const FIT_ABOVE = 1.5;

export function resized<A extends Float64Array | Int32Array | Uint8Array>(
  a: A,
  size: number,
  used: number,
): A {
  const b = new (a.constructor as new (n: number) => A)(size);
  b.set(a.subarray(0, Math.min(used, size)));
  return b;
}

/**
 * An array of objects with room for `size` entries made at once, its first `used` kept: written past its end one
 * entry at a time V8 grows it by half again, copying every entry in that write's turn (~10 ms per 400,000).
 */
export function roomFor<T>(a: (T | undefined)[], size: number, used: number): (T | undefined)[] {
  if (a.length >= size) return a;
  const b = new Array<T | undefined>(size);
  for (let i = 0; i < used; i++) b[i] = a[i];
  return b;
}

export class DueLanes {
  // By id:
  private at = new Float64Array(MIN_ROOM);
  private seq = new Float64Array(MIN_ROOM);
  /** Its place in its lane's heap; NONE: not queued. */
  private pos = new Int32Array(MIN_ROOM).fill(NONE);
  /** Its lane while queued; FREE: the id is not held. */
  private laneOf = new Uint8Array(MIN_ROOM).fill(FREE);
  /** Ids handed out at least once: ids below are held or free. */
  private top = 0;
  /** Free ids below top (a stack). */
  private free = new Int32Array(MIN_ROOM);
  private nFree = 0;
  // By lane: a binary heap of ids, and its entries.
  private readonly heaps: Int32Array[];
  private readonly sizes: number[];
  private nextSeq = 0;

  /** Called after the held items were renumbered, with old id -> new id (-1: a free id), and the room for ids now. */
  private readonly onRenumber: ((to: Int32Array, idCapacity: number) => void) | undefined;

  constructor(lanes: number, o: { onRenumber?: (to: Int32Array, idCapacity: number) => void } = {}) {
    if (!Number.isInteger(lanes) || lanes < 1 || lanes > 255)
      throw new RangeError(`DueLanes: lanes must be 1..255, got ${lanes}`);
    this.heaps = Array.from({ length: lanes }, () => new Int32Array(MIN_ROOM));
    this.sizes = new Array<number>(lanes).fill(0);
    this.onRenumber = o.onRenumber;
  }

  /** Whether id `id` is held (add gave it, delete did not free it yet). */
  has(id: number): boolean {
    return Number.isInteger(id) && id >= 0 && id < this.top && this.laneOf[id] !== FREE;
  }

  /** Items held (queued or not). */
  get held(): number {
    return this.top - this.nFree;
  }

  /** Ids the arrays hold room for: doubled when full; renumbered and cut to 1.25x the items by fit() once over 1.5x. */
  get idCapacity(): number {
    return this.at.length;
  }

  /** Entries queued in `lane`. */
  length(lane: number): number {
    return this.sizes[lane]!;
  }

  /** Entries the lane's heap holds room for: doubled when full, cut to 1.25x its entries when under half is used (at
   * least 64). */
  capacity(lane: number): number {
    return this.heaps[lane]!.length;
  }

  /** Makes room for `n` more items at once, and a quarter more (what fit() leaves): not doubled item by item (each
   * doubling copies every id's entries, and at powers of two it came in the same event-loop turn as the growth of a
   * Map of as many keys), nor full when they are in (the next add would double it). fit() cuts what stays unused. */
  reserve(n: number): void {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`DueLanes.reserve: n must be >= 0, got ${n}`);
    if (this.top + n > this.at.length)
      this.resizeIds(Math.max(MIN_ROOM, Math.ceil((this.held + n) * SHRUNK_ROOM), this.top + n));
  }

  /** Holds a new item (not queued) and returns its id: below idCapacity once it returns. */
  add(): number {
    let id: number;
    if (this.nFree > 0) id = this.free[--this.nFree]!;
    else {
      if (this.top === this.at.length) this.resizeIds(Math.max(this.at.length * 2, this.want));
      id = this.top++;
    }
    this.pos[id] = NONE;
    this.laneOf[id] = 0;
    return id;
  }

  /**
   * Lets go of item `id` (unqueued first). No other id changes here: ids are renumbered only by fit() (so a caller may
   * hold ids across deletes), once under half of them are held or the room is more than 1.5x them.
   */
  delete(id: number): void {
    this.check(id, 'delete');
    this.remove(id);
    this.laneOf[id] = FREE;
    if (this.nFree === this.free.length) this.free = resized(this.free, this.free.length * 2, this.nFree);
    this.free[this.nFree++] = id;
  }

  /** Whether item `id` is queued. */
  queued(id: number): boolean {
    this.check(id, 'queued');
    return this.pos[id] !== NONE;
  }

  /** Queues item `id` in `lane` at `at` (ms), after every entry of the same time there; moves it if it was queued. */
  push(id: number, lane: number, at: number): void {
    this.check(id, 'push');
    if (!(lane >= 0 && lane < this.heaps.length)) throw new RangeError(`DueLanes.push: no lane ${lane}`);
    if (this.pos[id] !== NONE) this.unqueue(id);
    this.at[id] = at;
    this.seq[id] = this.nextSeq++;
    this.laneOf[id] = lane;
    const n = this.sizes[lane]!;
    let h = this.heaps[lane]!;
    if (n === h.length) this.heaps[lane] = h = resized(h, h.length * 2, n);
    this.sizes[lane] = n + 1;
    this.up(h, n, id);
  }

  /** Unqueues item `id` if it is queued. */
  remove(id: number): void {
    this.check(id, 'remove');
    if (this.pos[id] !== NONE) this.unqueue(id);
  }

  /** The due time of the lane's earliest entry; Infinity: none. */
  topAt(lane: number): number {
    return this.sizes[lane]! > 0 ? this.at[this.heaps[lane]![0]!]! : Infinity;
  }

  /** Unqueues the lane's earliest entry and returns its id. */
  pop(lane: number): number {
    if (this.sizes[lane]! === 0) throw new RangeError(`DueLanes.pop: lane ${lane} is empty`);
    const id = this.heaps[lane]![0]!;
    this.unqueue(id);
    return id;
  }

  /** Unqueues every entry (the items stay held). */
  clear(): void {
    for (let lane = 0; lane < this.heaps.length; lane++) {
      const h = this.heaps[lane]!;
      for (let i = 0; i < this.sizes[lane]!; i++) this.pos[h[i]!] = NONE;
      this.sizes[lane] = 0;
      this.heaps[lane] = new Int32Array(MIN_ROOM);
    }
  }

  /** Entries of the lane due by `now`, and the earliest due time among them (Infinity: none); O(due). */
  due(lane: number, now: number): { n: number; earliest: number } {
    const h = this.heaps[lane]!;
    const size = this.sizes[lane]!;
    let n = 0;
    let earliest = Infinity;
    const stack = size > 0 ? [0] : [];
    while (stack.length > 0) {
      const i = stack.pop()!;
      const at = this.at[h[i]!]!;
      if (at > now) continue; // the heap's order: nothing below is due either
      n++;
      if (at < earliest) earliest = at;
      if (2 * i + 1 < size) stack.push(2 * i + 1);
      if (2 * i + 2 < size) stack.push(2 * i + 2);
    }
    return { n, earliest };
  }

  /** Cuts the id arrays to 1.25x the items held when they hold room for more than 1.5x (renumbering if ids are
   * free): after a burst of adds that doubled them, or deletes that freed most ids. Not at any room above 1.25x: held
   * a few below the last cut, every small change's fit() copied every id's entries again (~30 ms at 512,000 probes). */
  fit(): void {
    if (this.at.length > MIN_ROOM && this.at.length > Math.ceil(this.held * FIT_ABOVE)) this.renumber();
  }

  private check(id: number, what: string): void {
    if (!this.has(id)) throw new RangeError(`DueLanes.${what}: id ${id} is not held`);
  }

  /** Whether id a goes before id b: earlier, or as early and queued first. */
  private before(a: number, b: number): boolean {
    const x = this.at[a]!;
    const y = this.at[b]!;
    return x < y || (x === y && this.seq[a]! < this.seq[b]!);
  }

  /** Places id at position i of heap h or above. */
  private up(h: Int32Array, i: number, id: number): void {
    const at = this.at;
    const seq = this.seq;
    const pos = this.pos;
    const t = at[id]!;
    const s = seq[id]!;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const pid = h[p]!;
      const pt = at[pid]!;
      if (!(t < pt || (t === pt && s < seq[pid]!))) break;
      h[i] = pid;
      pos[pid] = i;
      i = p;
    }
    h[i] = id;
    pos[id] = i;
  }

  /** Places id at position i of heap h (of n entries) or below. */
  private down(h: Int32Array, n: number, i: number, id: number): void {
    const at = this.at;
    const seq = this.seq;
    const pos = this.pos;
    const t = at[id]!;
    const s = seq[id]!;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      let cid = h[c]!;
      let ct = at[cid]!;
      if (c + 1 < n) {
        const rid = h[c + 1]!;
        const rt = at[rid]!;
        if (rt < ct || (rt === ct && seq[rid]! < seq[cid]!)) {
          c++;
          cid = rid;
          ct = rt;
        }
      }
      if (!(ct < t || (ct === t && seq[cid]! < s))) break;
      h[i] = cid;
      pos[cid] = i;
      i = c;
    }
    h[i] = id;
    pos[id] = i;
  }

  private unqueue(id: number): void {
    const lane = this.laneOf[id]!;
    const h = this.heaps[lane]!;
    const i = this.pos[id]!;
    const n = --this.sizes[lane]!;
    this.pos[id] = NONE;
    if (i !== n) {
      const last = h[n]!;
      if (i > 0 && this.before(last, h[(i - 1) >> 1]!)) this.up(h, i, last);
      else this.down(h, n, i, last);
    }
    // Room back once under half is used, to 1.25x the entries: the next growth (at full) or shrink is a quarter or
    // three eighths of them away, never a push or pop apart.
    if (h.length > MIN_ROOM && 2 * n < h.length)
      this.heaps[lane] = resized(h, Math.max(MIN_ROOM, Math.ceil(n * SHRUNK_ROOM)), n);
  }

  /** Renumbers the held items 0..held-1 (in id order) and sizes the id arrays to 1.25x them (at least 64); then
   * onRenumber. */
  private renumber(): void {
    const to = this.onRenumber === undefined ? null : new Int32Array(this.top).fill(-1);
    let k = 0;
    for (let id = 0; id < this.top; id++) {
      if (this.laneOf[id] === FREE) continue;
      if (to !== null) to[id] = k;
      if (k !== id) {
        this.at[k] = this.at[id]!;
        this.seq[k] = this.seq[id]!;
        this.laneOf[k] = this.laneOf[id]!;
        const i = this.pos[id]!;
        this.pos[k] = i;
        if (i !== NONE) this.heaps[this.laneOf[k]!]![i] = k;
      }
      k++;
    }
    this.laneOf.fill(FREE, k, this.top);
    this.top = k;
    this.nFree = 0;
    this.free = new Int32Array(MIN_ROOM);
    this.resizeIds(Math.max(MIN_ROOM, Math.ceil(k * SHRUNK_ROOM)));
    if (to !== null) this.onRenumber!(to, this.at.length);
  }

  private resizeIds(size: number): void {
    const used = this.top;
    this.at = resized(this.at, size, used);
    // arrays already made that size ahead (growOne) are kept
    if (this.seq.length !== size) this.seq = resized(this.seq, size, used);
    if (this.pos.length !== size) {
      const pos = resized(this.pos, size, used);
      if (size > used) pos.fill(NONE, used);
      this.pos = pos;
    }
    if (this.laneOf.length !== size) {
      const laneOf = resized(this.laneOf, size, used);
      if (size > used) laneOf.fill(FREE, used);
      this.laneOf = laneOf;
    }
    if (this.want <= size) this.want = 0;
  }

  /** Room promised by reserveAhead and not made yet (0: none). */
  private want = 0;

  /** As reserve(n), made later: by growOne() an array at a time, or at once by the first add() that needs it. */
  reserveAhead(n: number): void {
    if (!Number.isSafeInteger(n) || n < 0)
      throw new RangeError(`DueLanes.reserveAhead: n must be >= 0, got ${n}`);
    if (this.top + n > this.at.length)
      this.want = Math.max(this.want, MIN_ROOM, Math.ceil((this.held + n) * SHRUNK_ROOM), this.top + n);
  }

  /** Makes one array of the room reserveAhead promised (`at` last: idCapacity is its length); false when all have it. */
  growOne(): boolean {
    const want = this.want;
    const used = this.top;
    if (want === 0) return false;
    if (this.seq.length < want) this.seq = resized(this.seq, want, used);
    else if (this.pos.length < want) {
      const pos = resized(this.pos, want, used);
      pos.fill(NONE, used);
      this.pos = pos;
    } else if (this.laneOf.length < want) {
      const laneOf = resized(this.laneOf, want, used);
      laneOf.fill(FREE, used);
      this.laneOf = laneOf;
    } else if (this.at.length < want) this.at = resized(this.at, want, used);
    else this.want = 0;
    return this.want > 0;
  }
}
