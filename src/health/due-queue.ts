// DueQueue: probes queued by due time, earliest first (equal times in queueing order), as a binary heap over
// typed arrays. An entry of a probe whose slot moved on since it was queued is stale (the probe was
// rescheduled or cancelled) and is dropped when it reaches the top. A heap of entry objects cost a 64-byte
// object per queued start and a pointer chase per comparison: with 51,200 timing-out targets (18,000 starts a
// second) its pops were 16% of the monitor's CPU and its entries much of its garbage (profiled).

/** Anything queued: its current slot (an int32; wrap it with `| 0`) tells live entries from stale ones. */
export interface Slotted {
  slot: number;
}

/** Room for this many times the entries after a shrink (DueQueue.shrinkIfSparse). */
const SHRUNK_ROOM = 1.25;

export class DueQueue<P extends Slotted> {
  private at = new Float64Array(64);
  private seq = new Float64Array(64);
  /** Int32: 4 bytes an entry, not 8 (2 MB of a 524,288-entry queue at 512,000 probes). */
  private slot = new Int32Array(64);
  private item: (P | undefined)[] = [];
  private n = 0;
  private nextSeq = 0;

  /** Entries queued, stale ones included. */
  get length(): number {
    return this.n;
  }

  /** Entries the arrays hold room for: doubled when full, cut to 1.25x the entries when under half is used (at least
   * 64). */
  get capacity(): number {
    return this.at.length;
  }

  /** Queues `item` at `at` (ms) with its slot now. */
  push(at: number, item: P): void {
    if (this.n === this.at.length) this.grow();
    const seq = this.nextSeq++;
    let i = this.n++;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!(at < this.at[p]! || (at === this.at[p]! && seq < this.seq[p]!))) break;
      this.move(p, i);
      i = p;
    }
    this.put(i, at, seq, item.slot, item);
  }

  /** The due time of the earliest live entry (stale ones above it are dropped); Infinity: none. */
  topAt(): number {
    while (this.n > 0 && this.slot[0] !== this.item[0]!.slot) this.pop();
    return this.n > 0 ? this.at[0]! : Infinity;
  }

  /** Removes the earliest entry and returns its item (live when topAt() was just called and was finite). */
  pop(): P {
    if (this.n === 0) throw new RangeError('DueQueue.pop: the queue is empty');
    const top = this.item[0]!;
    const last = --this.n;
    const at = this.at[last]!;
    const seq = this.seq[last]!;
    const slot = this.slot[last]!;
    const item = this.item[last]!;
    this.item[last] = undefined;
    if (last > 0) this.siftDown(0, at, seq, slot, item);
    this.shrinkIfSparse();
    return top;
  }

  clear(): void {
    this.item = [];
    this.n = 0;
    this.shrinkIfSparse();
  }

  /** Drops every stale entry (they pile up when probes are rescheduled or cancelled). */
  compact(): void {
    let k = 0;
    for (let i = 0; i < this.n; i++)
      if (this.slot[i] === this.item[i]!.slot) this.put(k++, this.at[i]!, this.seq[i]!, this.slot[i]!, this.item[i]!); // prettier-ignore
    for (let i = k; i < this.n; i++) this.item[i] = undefined;
    this.n = k;
    for (let i = (k >> 1) - 1; i >= 0; i--)
      this.siftDown(i, this.at[i]!, this.seq[i]!, this.slot[i]!, this.item[i]!);
    this.shrinkIfSparse();
  }

  /** Live entries due by `now`, and the earliest due time among them (Infinity: none); O(due + stale). */
  due(now: number): { n: number; earliest: number } {
    let n = 0;
    let earliest = Infinity;
    const stack = this.n > 0 ? [0] : [];
    while (stack.length > 0) {
      const i = stack.pop()!;
      if (this.at[i]! > now) continue; // the heap's order: nothing below is due either
      if (this.slot[i] === this.item[i]!.slot) {
        n++;
        if (this.at[i]! < earliest) earliest = this.at[i]!;
      }
      if (2 * i + 1 < this.n) stack.push(2 * i + 1);
      if (2 * i + 2 < this.n) stack.push(2 * i + 2);
    }
    return { n, earliest };
  }

  /** Sinks the entry (at, seq, slot, item) from position i to its place below. */
  private siftDown(i: number, at: number, seq: number, slot: number, item: P): void {
    for (;;) {
      const l = 2 * i + 1;
      if (l >= this.n) break;
      const r = l + 1;
      const m = r < this.n && this.before(r, l) ? r : l;
      if (!(this.at[m]! < at || (this.at[m] === at && this.seq[m]! < seq))) break;
      this.move(m, i);
      i = m;
    }
    this.put(i, at, seq, slot, item);
  }

  private before(a: number, b: number): boolean {
    return this.at[a]! < this.at[b]! || (this.at[a] === this.at[b] && this.seq[a]! < this.seq[b]!);
  }

  private move(from: number, to: number): void {
    this.put(to, this.at[from]!, this.seq[from]!, this.slot[from]!, this.item[from]!);
  }

  private put(i: number, at: number, seq: number, slot: number, item: P): void {
    this.at[i] = at;
    this.seq[i] = seq;
    this.slot[i] = slot;
    this.item[i] = item;
  }

  private grow(): void {
    this.resize(this.at.length * 2);
  }

  /**
   * Shrinks the arrays to SHRUNK_ROOM x the entries (never below 64) once under half of them is used: a queue that
   * held every probe once (the start queues them all as slow; at 512,000 probes 14 MB) gives the room back while
   * they move to another, which grows meanwhile. Halving under a quarter kept the two queues at twice the probes
   * for a while (1,048,576 entries of room for 512,000 probes, ~14 MB more: the daemon's RSS while its first
   * checks ran at 512 x 1000); this way the most is ~1.66x. After a shrink the room is 1.25x the entries: a growth
   * (at full) or another shrink is a quarter or three eighths of them away, never a push or pop apart.
   */
  private shrinkIfSparse(): void {
    const size = this.at.length;
    if (size <= 64 || 2 * this.n >= size) return;
    this.resize(Math.max(64, Math.ceil(this.n * SHRUNK_ROOM)));
  }

  private resize(size: number): void {
    for (const k of ['at', 'seq'] as const) {
      const a = new Float64Array(size);
      a.set(this[k].subarray(0, Math.min(this.n, size)));
      this[k] = a;
    }
    const slot = new Int32Array(size);
    slot.set(this.slot.subarray(0, Math.min(this.n, size)));
    this.slot = slot;
    if (this.item.length > size) this.item.length = size;
  }
}
