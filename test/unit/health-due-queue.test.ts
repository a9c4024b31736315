// DueQueue (pure): entries come out earliest first, equal times in queueing order; entries of a probe whose
// slot moved on are stale and skipped; compact drops them; due() counts live entries due by a time.
import { DueQueue } from '../../src/health/due-queue';

interface Item {
  name: string;
  slot: number;
}

/** Every live entry, in the order the queue gives them. */
function drain(q: DueQueue<Item>): [string, number][] {
  const out: [string, number][] = [];
  for (let at = q.topAt(); at !== Infinity; at = q.topAt()) out.push([q.pop().name, at]);
  return out;
}

/** A deterministic shuffle of 1,000 times over 100 distinct values (many ties), and the order a queue must give them. */
function shuffled(): { entries: { at: number; item: Item }[]; expected: [string, number][] } {
  const entries = Array.from({ length: 1000 }, (_, i) => ({
    at: (i * 37) % 100,
    item: { name: `p${i}`, slot: 0 },
  }));
  const expected = [...entries]
    .map((e, i) => ({ ...e, i }))
    .sort((a, b) => a.at - b.at || a.i - b.i)
    .map((e): [string, number] => [e.item.name, e.at]);
  return { entries, expected };
}

describe('DueQueue', () => {
  it('gives entries earliest first, equal times in the order queued, across growth', () => {
    const q = new DueQueue<Item>();
    // several growths from 64
    const { entries, expected } = shuffled();
    for (const e of entries) q.push(e.at, e.item);
    expect(q.length).toBe(1000);
    expect(drain(q)).toEqual(expected);
    expect(q.length).toBe(0);
    expect(() => q.pop()).toThrow('DueQueue.pop: the queue is empty');
  });

  it('skips entries whose probe was requeued or cancelled (its slot moved on)', () => {
    const q = new DueQueue<Item>();
    const a = { name: 'a', slot: 0 };
    const b = { name: 'b', slot: 0 };
    const c = { name: 'c', slot: 0 };
    q.push(10, a);
    q.push(20, b);
    q.push(30, c);
    a.slot++; // requeued later
    q.push(40, a);
    b.slot++; // cancelled
    expect(q.length).toBe(4);
    expect(q.due(35)).toEqual({ n: 1, earliest: 30 });
    expect(drain(q)).toEqual([
      ['c', 30],
      ['a', 40],
    ]);
  });

  it('keeps slots as int32: a slot that wrapped past 2^31 - 1 (as the monitor bumps them, `| 0`) tells stale from live', () => {
    const q = new DueQueue<Item>();
    const a = { name: 'a', slot: 2 ** 31 - 1 };
    const b = { name: 'b', slot: -1 };
    q.push(10, a);
    q.push(20, b);
    a.slot = (a.slot + 1) | 0; // -2^31: requeued later
    q.push(30, a);
    b.slot = (b.slot + 1) | 0; // 0: cancelled
    expect(q.due(25)).toEqual({ n: 0, earliest: Infinity });
    expect(drain(q)).toEqual([['a', 30]]);
  });

  it('two queues trading every entry (probes moving from the slow queue to the quick one) hold under twice their entries of room', () => {
    // The start queues every probe as slow; their first results move them to the quick queue one by one.
    const n = 20_000;
    const items = Array.from({ length: n }, (_, i) => ({ name: `p${i}`, slot: 0 }));
    const from = new DueQueue<Item>();
    const to = new DueQueue<Item>();
    items.forEach((it, i) => from.push(i, it));
    let most = 0;
    let order = true;
    for (let i = 0; i < n; i++) {
      if (from.topAt() !== i) order = false;
      to.push(n + i, from.pop());
      most = Math.max(most, from.capacity + to.capacity);
    }
    expect(order).toBe(true);
    // halving under a quarter held 49,152 slots of room at once here (2.46x; seen)
    console.log(`room held at most: ${most} for ${n} entries (${(most / n).toFixed(2)}x)`);
    expect(most).toBeLessThanOrEqual(2 * n);
    expect(to.capacity).toBe(32_768);
    expect(from.capacity).toBe(64);
  });

  it('gives its room back: cut to 1.25x the entries once under half is used (never below 64), order kept', () => {
    const q = new DueQueue<Item>();
    const { entries, expected } = shuffled();
    for (const e of entries) q.push(e.at, e.item);
    expect(q.capacity).toBe(1024);
    const out: [string, number][] = [];
    const capacities: number[] = [q.capacity];
    for (let at = q.topAt(); at !== Infinity; at = q.topAt()) {
      out.push([q.pop().name, at]);
      if (q.capacity !== capacities[capacities.length - 1]) capacities.push(q.capacity);
      // half or more of the room is in use, or the floor of 64
      expect(q.length >= q.capacity / 2 || q.capacity === 64).toBe(true);
    }
    expect(out).toEqual(expected);
    // each shrink to 1.25x the entries left (511 of 1,024: 639), down to the floor
    expect(capacities).toEqual([1024, 639, 399, 249, 155, 97, 64]);
    expect(capacities.every((c, i) => i === 0 || c < capacities[i - 1]!)).toBe(true);
    expect(capacities[capacities.length - 1]).toBe(64);
    // Pushed again after shrinking: it grows by doubling as before (64 -> 128 -> 256 -> 512).
    for (const e of entries.slice(0, 300)) q.push(e.at, e.item);
    expect(q.capacity).toBe(512);
    // compact drops stale entries and shrinks with them
    for (const e of entries.slice(0, 300)) e.item.slot++;
    q.compact();
    expect(q.length).toBe(0);
    expect(q.capacity).toBe(64);
    q.push(5, entries[0]!.item);
    expect(drain(q)).toEqual([['p0', 5]]);
  });

  it('compact keeps exactly the live entries, in order', () => {
    const q = new DueQueue<Item>();
    const items = Array.from({ length: 200 }, (_, i) => ({ name: `p${i}`, slot: 0 }));
    items.forEach((it, i) => q.push(200 - i, it));
    items.forEach((it, i) => i % 3 === 0 && it.slot++);
    q.compact();
    const live = items.filter((_, i) => i % 3 !== 0);
    expect(q.length).toBe(live.length);
    expect(q.due(Infinity)).toEqual({ n: live.length, earliest: 200 - 199 });
    expect(drain(q).map(([name]) => name)).toEqual(live.map((it) => it.name).reverse());
  });

  it('clear empties it', () => {
    const q = new DueQueue<Item>();
    q.push(1, { name: 'a', slot: 0 });
    q.clear();
    expect(q.topAt()).toBe(Infinity);
    expect(q.due(10)).toEqual({ n: 0, earliest: Infinity });
  });
});
