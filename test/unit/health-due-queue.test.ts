// DueLanes (pure): per lane, entries come out earliest first, equal times in queueing order; an item is queued in one
// lane at most (pushing it again moves it); remove and delete unqueue it; fit() renumbers the ids once most are free
// (never a delete: its caller holds ids across deletes); due() counts entries due by a time; moving every item from one
// lane to another costs no more room.
import { DueLanes, roomFor } from '../../src/health/due-queue';

interface Item {
  name: string;
  id: number;
}

const item = (name: string): Item => ({ name, id: -1 });

/**
 * DueLanes as its caller holds it (the health monitor's probe columns): named items by id, each item's id as add()
 * gave it and followed through every renumbering by onRenumber's map alone.
 */
class Named {
  readonly q: DueLanes;
  private byId = new Map<number, Item>();

  constructor(lanes: number, onRenumber?: (to: Int32Array, cap: number) => void) {
    this.q = new DueLanes(lanes, {
      onRenumber: (to, cap) => {
        const next = new Map<number, Item>();
        for (const [id, it] of this.byId) {
          expect(to[id]).toBeGreaterThanOrEqual(0);
          it.id = to[id]!;
          next.set(it.id, it);
        }
        this.byId = next;
        onRenumber?.(to, cap);
      },
    });
  }

  add(it: Item): void {
    it.id = this.q.add();
    expect(this.byId.has(it.id)).toBe(false);
    this.byId.set(it.id, it);
  }
  delete(it: Item): void {
    this.q.delete(it.id);
    this.byId.delete(it.id);
  }
  push(it: Item, lane: number, at: number): void {
    this.q.push(it.id, lane, at);
  }
  remove(it: Item): void {
    this.q.remove(it.id);
  }
  queued(it: Item): boolean {
    return this.q.queued(it.id);
  }
  pop(lane: number): Item {
    return this.byId.get(this.q.pop(lane))!;
  }
  item(id: number): Item | undefined {
    return this.q.has(id) ? this.byId.get(id) : undefined;
  }
  topAt(lane: number): number {
    return this.q.topAt(lane);
  }
  length(lane: number): number {
    return this.q.length(lane);
  }
  capacity(lane: number): number {
    return this.q.capacity(lane);
  }
  get held(): number {
    return this.q.held;
  }
  get idCapacity(): number {
    return this.q.idCapacity;
  }
  due(lane: number, now: number): { n: number; earliest: number } {
    return this.q.due(lane, now);
  }
  clear(): void {
    this.q.clear();
  }
  fit(): void {
    this.q.fit();
  }
  reserve(n: number): void {
    this.q.reserve(n);
  }
  reserveAhead(n: number): void {
    this.q.reserveAhead(n);
  }
  growOne(): boolean {
    return this.q.growOne();
  }
}

/** Every entry of the lane, in the order it gives them. */
function drain(q: Named, lane = 0): [string, number][] {
  const out: [string, number][] = [];
  for (let at = q.topAt(lane); at !== Infinity; at = q.topAt(lane)) out.push([q.pop(lane).name, at]);
  return out;
}

/** A deterministic shuffle of 1,000 times over 100 distinct values (many ties), and the order a lane must give them. */
function shuffled(): { entries: { at: number; item: Item }[]; expected: [string, number][] } {
  const entries = Array.from({ length: 1000 }, (_, i) => ({ at: (i * 37) % 100, item: item(`p${i}`) }));
  const expected = [...entries]
    .map((e, i) => ({ ...e, i }))
    .sort((a, b) => a.at - b.at || a.i - b.i)
    .map((e): [string, number] => [e.item.name, e.at]);
  return { entries, expected };
}

/** A small deterministic generator (xorshift32) in [0, 1). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

/** shuffled(), every entry held and queued in lane 0 of a one-lane DueLanes. */
function queuedShuffle(): ReturnType<typeof shuffled> & { q: Named } {
  const q = new Named(1);
  const { entries, expected } = shuffled();
  for (const e of entries) {
    q.add(e.item);
    q.push(e.item, 0, e.at);
  }
  return { q, entries, expected };
}

describe('DueLanes', () => {
  it('gives entries earliest first, equal times in the order queued, across growth', () => {
    const { q, expected } = queuedShuffle();
    expect(q.length(0)).toBe(1000);
    expect(q.held).toBe(1000);
    expect(drain(q)).toEqual(expected);
    expect(q.length(0)).toBe(0);
    expect(q.held).toBe(1000);
    expect(() => q.pop(0)).toThrow('DueLanes.pop: lane 0 is empty');
  });

  it('keeps lanes apart; pushing a queued item again moves it (lane and time), after others of its new time', () => {
    const q = new Named(3);
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map(item) as [Item, Item, Item, Item];
    for (const x of [a, b, c, d]) q.add(x);
    q.push(a, 0, 10);
    q.push(b, 1, 5);
    q.push(c, 0, 20);
    q.push(d, 2, 1);
    expect([0, 1, 2].map((l) => q.topAt(l))).toEqual([10, 5, 1]);
    q.push(a, 0, 30); // later in its lane
    q.push(b, 0, 20); // to lane 0, after c (same time, queued before)
    expect(q.length(1)).toBe(0);
    expect(q.topAt(1)).toBe(Infinity);
    expect(q.queued(b)).toBe(true);
    expect(drain(q, 0)).toEqual([
      ['c', 20],
      ['b', 20],
      ['a', 30],
    ]);
    expect(drain(q, 2)).toEqual([['d', 1]]);
    expect(q.queued(a)).toBe(false);
  });

  it('remove unqueues an item from the middle of the heap; the rest keep their order', () => {
    const { q, entries, expected } = queuedShuffle();
    const gone = new Set(entries.filter((_, i) => i % 3 === 1).map((e) => e.item.name));
    for (const e of entries) if (gone.has(e.item.name)) q.remove(e.item);
    q.remove(entries[1]!.item); // not queued any more: nothing happens
    expect(q.length(0)).toBe(1000 - gone.size);
    expect(q.due(0, Infinity).n).toBe(1000 - gone.size);
    expect(drain(q)).toEqual(expected.filter(([name]) => !gone.has(name)));
  });

  it('matches a sorted list under a random mix of pushes, moves, removes, pops, adds and deletes (3 lanes)', () => {
    const next = rng(42);
    const q = new Named(3);
    // the model: per held item, its lane and time and queueing order, or null when not queued
    const model = new Map<Item, { lane: number; at: number; seq: number } | null>();
    let seq = 0;
    let n = 0;
    for (let step = 0; step < 20_000; step++) {
      const r = next();
      const held = [...model.keys()];
      if (r < 0.15 || held.length === 0) {
        const it = item(`i${n++}`);
        q.add(it);
        model.set(it, null);
      } else if (r < 0.55) {
        const it = held[Math.floor(next() * held.length)]!;
        const lane = Math.floor(next() * 3);
        const at = Math.floor(next() * 50);
        q.push(it, lane, at);
        model.set(it, { lane, at, seq: seq++ });
      } else if (r < 0.65) {
        const it = held[Math.floor(next() * held.length)]!;
        q.remove(it);
        model.set(it, null);
      } else if (r < 0.75) {
        const it = held[Math.floor(next() * held.length)]!;
        q.delete(it);
        model.delete(it);
      } else if (r < 0.77) {
        // renumbers once the room is over 1.5x the items: Named follows every item's id
        q.fit();
      } else {
        const lane = Math.floor(next() * 3);
        const want = [...model.entries()]
          .filter(([, e]) => e !== null && e.lane === lane)
          .sort(([, x], [, y]) => x!.at - y!.at || x!.seq - y!.seq)[0];
        if (want === undefined) expect(q.topAt(lane)).toBe(Infinity);
        else {
          expect(q.topAt(lane)).toBe(want[1]!.at);
          expect(q.pop(lane)).toBe(want[0]);
          model.set(want[0], null);
        }
      }
      if (step % 1000 === 0) {
        expect(q.held).toBe(model.size);
        for (const lane of [0, 1, 2])
          expect(q.length(lane)).toBe([...model.values()].filter((e) => e?.lane === lane).length);
      }
    }
    // every held item is still told by its id, and the lanes drain in the model's order
    for (const [it, e] of model) expect(q.queued(it)).toBe(e !== null);
    for (const lane of [0, 1, 2]) {
      const want = [...model.entries()]
        .filter(([, e]) => e !== null && e.lane === lane)
        .sort(([, x], [, y]) => x!.at - y!.at || x!.seq - y!.seq)
        .map(([it, e]): [string, number] => [it.name, e!.at]);
      expect(drain(q, lane)).toEqual(want);
    }
  });

  it('an id not held is refused by number; a freed id is handed out again', () => {
    const q = new DueLanes(1);
    const a = q.add();
    const b = q.add();
    expect([a, b]).toEqual([0, 1]);
    expect(q.has(a)).toBe(true);
    q.delete(a);
    expect(q.has(a)).toBe(false);
    expect(q.held).toBe(1);
    expect(() => q.push(a, 0, 1)).toThrow(`DueLanes.push: id ${a} is not held`);
    expect(() => q.remove(a)).toThrow('DueLanes.remove: id 0 is not held');
    expect(() => q.delete(a)).toThrow('DueLanes.delete: id 0 is not held');
    expect(() => q.queued(7)).toThrow('DueLanes.queued: id 7 is not held');
    expect(() => q.push(-1, 0, 1)).toThrow('DueLanes.push: id -1 is not held');
    expect(() => q.push(0.5, 0, 1)).toThrow('DueLanes.push: id 0.5 is not held');
    expect(() => q.push(b, 1, 1)).toThrow('DueLanes.push: no lane 1');
    expect(q.add()).toBe(a); // a's id again
    expect(q.queued(a)).toBe(false);
    expect(() => new DueLanes(0)).toThrow('DueLanes: lanes must be 1..255, got 0');
  });

  it('every item moving from one lane to another (the start: slow first, then quick) holds no more room than before', () => {
    // At a start every probe is queued as slow; its first result moves it to the quick lane.
    const n = 20_000;
    const q = new Named(2);
    const items = Array.from({ length: n }, (_, i) => item(`p${i}`));
    items.forEach((it, i) => {
      q.add(it);
      q.push(it, 1, i);
    });
    const ids = q.idCapacity;
    const heapRoom = (): number => q.capacity(0) + q.capacity(1);
    let most = heapRoom();
    let order = true;
    for (let i = 0; i < n; i++) {
      if (q.topAt(1) !== i) order = false;
      q.push(q.pop(1), 0, n + i);
      most = Math.max(most, heapRoom());
    }
    expect(order).toBe(true);
    // the per-id arrays (8 + 8 + 4 + 1 + 8 bytes an id) never moved; only the 4-byte heap entries did
    expect(q.idCapacity).toBe(ids);
    expect(ids).toBe(32_768);
    console.log(
      `heap room held at most: ${most} entries for ${n} items (${(most / n).toFixed(2)}x), ids ${ids}`,
    );
    // separate queues of 28-byte entries held 37,888 entries of room at once here (1.89x), ~1 MB
    expect(most).toBeLessThanOrEqual(2 * n);
    expect(q.capacity(0)).toBe(32_768);
    expect(q.capacity(1)).toBe(64);
    expect(drain(q, 0).map(([name]) => name)).toEqual(items.map((it) => it.name));
  });

  it("gives a lane's room back: cut to 1.25x the entries once under half is used (never below 64), order kept", () => {
    const { q, entries, expected } = queuedShuffle();
    expect(q.capacity(0)).toBe(1024);
    const out: [string, number][] = [];
    const capacities: number[] = [q.capacity(0)];
    for (let at = q.topAt(0); at !== Infinity; at = q.topAt(0)) {
      out.push([q.pop(0).name, at]);
      if (q.capacity(0) !== capacities[capacities.length - 1]) capacities.push(q.capacity(0));
      // half or more of the room is in use, or the floor of 64
      expect(q.length(0) >= q.capacity(0) / 2 || q.capacity(0) === 64).toBe(true);
    }
    expect(out).toEqual(expected);
    // each shrink to 1.25x the entries left (511 of 1,024: 639), down to the floor
    expect(capacities).toEqual([1024, 639, 399, 249, 155, 97, 64]);
    // pushed again: it grows by doubling (64 -> 128 -> 256 -> 512)
    for (const e of entries.slice(0, 300)) q.push(e.item, 0, e.at);
    expect(q.capacity(0)).toBe(512);
    q.clear();
    expect(q.capacity(0)).toBe(64);
    expect(q.topAt(0)).toBe(Infinity);
    expect(q.due(0, 10)).toEqual({ n: 0, earliest: Infinity });
    expect(q.held).toBe(1000);
    expect(q.queued(entries[0]!.item)).toBe(false);
  });

  it('fit() renumbers the ids once most are free (a delete never does), and cuts the room a burst of adds doubled', () => {
    const q = new Named(2);
    const items = Array.from({ length: 1000 }, (_, i) => item(`p${i}`));
    for (const it of items) q.add(it);
    expect(q.idCapacity).toBe(1024);
    items.forEach((it, i) => q.push(it, i % 2, 1000 - i));
    // 1,000 held in room for 1,024: nothing to cut
    q.fit();
    expect(q.idCapacity).toBe(1024);
    // deleting every odd item but the last few: no id moves until fit()
    const kept = items.filter((_, i) => i % 2 === 0 || i >= 980);
    const ids = kept.map((it) => it.id);
    for (const [i, it] of items.entries()) if (i % 2 === 1 && i < 980) q.delete(it);
    expect(q.held).toBe(kept.length);
    expect(q.idCapacity).toBe(1024);
    expect(kept.map((it) => it.id)).toEqual(ids);
    // 510 held in room for 1,024 (over 1.5x): renumbered to ids 0..509 in id order, in room for 1.25x them
    q.fit();
    expect(q.idCapacity).toBe(638);
    expect(kept.map((it) => it.id)).toEqual(kept.map((_, k) => k));
    const lane = (it: Item): number => items.indexOf(it) % 2;
    const want = (l: number): string[] =>
      kept
        .filter((it) => lane(it) === l)
        .sort((x, y) => items.indexOf(y) - items.indexOf(x))
        .map((it) => it.name);
    expect(drain(q, 0).map(([name]) => name)).toEqual(want(0));
    expect(drain(q, 1).map(([name]) => name)).toEqual(want(1));
    // a burst of adds doubles the room; fit() cuts it to 1.25x the items
    const more = Array.from({ length: 1100 }, (_, i) => item(`m${i}`));
    for (const it of more) q.add(it);
    const held = kept.length + more.length;
    expect(q.idCapacity).toBeGreaterThan(held * 1.25);
    q.fit();
    expect(q.idCapacity).toBe(Math.ceil(held * 1.25));
    for (const it of [...kept, ...more]) q.push(it, 0, 1);
    expect(drain(q, 0).map(([name]) => name)).toEqual([...kept, ...more].map((it) => it.name));
  });

  it('tells onRenumber old id -> new id (-1 for a free one) and the room after renumbering', () => {
    const calls: Int32Array[] = [];
    const rooms: number[] = [];
    const q = new Named(1, (to, cap) => {
      calls.push(to.slice());
      rooms.push(cap);
      expect(cap).toBe(q.idCapacity);
    });
    const items = Array.from({ length: 200 }, (_, i) => item(`p${i}`));
    for (const it of items) q.add(it);
    // each item's id followed through every renumbering by the maps alone
    const followed = new Map(items.map((it) => [it, it.id]));
    let renumbered = 0;
    items.forEach((it) => expect(q.item(it.id)).toBe(it));
    // every item but each tenth: renumbered as fewer than half of the ids are held
    for (const [i, it] of items.entries())
      if (i % 10 !== 0) {
        q.delete(it);
        q.fit(); // as the monitor does after a change
        followed.delete(it);
        for (let to = calls.shift(); to !== undefined; to = calls.shift()) {
          renumbered++;
          // held ones to 0..k-1 in id order; free ones to -1
          const mapped = [...to].filter((x) => x >= 0);
          expect(mapped).toEqual(mapped.map((_, k) => k));
          for (const [x, old] of followed) followed.set(x, to[old]!);
        }
      }
    expect(renumbered).toBeGreaterThanOrEqual(1);
    expect(rooms.length).toBe(renumbered);
    expect(q.idCapacity).toBeLessThan(256);
    for (const [x, id] of followed) {
      expect(x.id).toBe(id);
      expect(q.item(id)).toBe(x);
    }
    expect(q.item(q.idCapacity + 5)).toBeUndefined();
    // no hook, no map made: still renumbers
    const plain = new DueLanes(1);
    const others = Array.from({ length: 200 }, () => plain.add());
    others.forEach((id) => plain.push(id, 0, id));
    for (const id of others.slice(0, 190)) plain.delete(id);
    expect(plain.idCapacity).toBe(256);
    plain.fit();
    expect(plain.idCapacity).toBe(64);
    expect(plain.held).toBe(10);
    // the ten left, renumbered 0..9, come out in their order
    expect(Array.from({ length: 10 }, () => plain.pop(0))).toEqual(others.slice(0, 10));
  });

  it('fit() leaves the room alone until it is over 1.5x the items (not a copy of every id at each small change)', () => {
    const q = new Named(1);
    const items = Array.from({ length: 1100 }, (_, i) => item(`p${i}`));
    for (const it of items) q.add(it);
    expect(q.idCapacity).toBe(2048);
    q.fit();
    expect(q.idCapacity).toBe(1375); // 1.25 x 1,100
    // a few deleted (and fit() after each, as the monitor does after every change): no cut
    for (const it of items.slice(0, 150)) {
      q.delete(it);
      q.fit();
    }
    expect(q.idCapacity).toBe(1375);
    // under 1375 / 1.5 = 916.7 held: cut to 1.25x again
    for (const it of items.slice(150, 184)) q.delete(it);
    q.fit();
    expect(q.held).toBe(916);
    expect(q.idCapacity).toBe(1145);
    // reserve(n): room for n more and a quarter, at once; fit() then cuts nothing while they are in
    const r = new Named(1);
    r.reserve(1000);
    expect(r.idCapacity).toBe(1250);
    for (const it of Array.from({ length: 1000 }, (_, i) => item(`r${i}`))) r.add(it);
    r.fit();
    expect(r.idCapacity).toBe(1250);
    expect(() => r.reserve(-1)).toThrow(/n must be >= 0, got -1/);
  });

  it('roomFor makes room at once and keeps the entries in use; an array with room already is kept as it is', () => {
    const a = ['x', 'y', 'z'];
    const b = roomFor(a, 1000, 2);
    expect(b).not.toBe(a);
    expect(b.length).toBe(1000);
    expect(b.slice(0, 3)).toEqual(['x', 'y', undefined]); // only the first `used` are kept
    expect(b.filter((x) => x !== undefined)).toEqual(['x', 'y']);
    expect(roomFor(b, 500, 2)).toBe(b);
    expect(roomFor(b, 1000, 2)).toBe(b);
    // a queue whose ids were reserved gives its items that room once (growItems), takes that many, and gives them
    // back by id after a renumbering
    const q = new Named(1);
    const early = item('early');
    q.add(early);
    q.reserveAhead(5000);
    expect(q.idCapacity).toBe(64); // promised, not made
    const made: number[] = [];
    while (q.growOne()) made.push(q.idCapacity);
    // seq, pos, laneOf, then at (idCapacity shows the room once all four have it)
    expect(made).toEqual([64, 64, 64, 6252]); // 1.25 x (1 held + 5,000)
    expect(() => q.reserveAhead(-1)).toThrow(/n must be >= 0, got -1/);
    const items = Array.from({ length: 5000 }, (_, i) => item(`q${i}`));
    for (const it of items) q.add(it);
    items.forEach((it, i) => q.push(it, 0, i + 1));
    q.push(early, 0, 0);
    for (const it of items.slice(0, 4000)) q.delete(it);
    expect(q.held).toBe(1001);
    expect(q.pop(0)).toBe(early); // held from before the room was made
    expect(q.pop(0)).toBe(items[4000]);
  });

  it('due() counts the entries due by a time, and the earliest', () => {
    const q = new Named(1);
    const items = Array.from({ length: 200 }, (_, i) => item(`p${i}`));
    items.forEach((it, i) => {
      q.add(it);
      q.push(it, 0, 200 - i);
    });
    expect(q.due(0, 0)).toEqual({ n: 0, earliest: Infinity });
    expect(q.due(0, 10)).toEqual({ n: 10, earliest: 1 });
    expect(q.due(0, Infinity)).toEqual({ n: 200, earliest: 1 });
  });
});
