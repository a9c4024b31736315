// IdGroup: a VIP's membership ids over its key array; it reads as the Map it was made from, whatever order the
// lookups come in, and shares the members' array only when it holds the same keys in the same order.
import fc from 'fast-check';
import { IdGroup } from '../../src/reconcile/id-group';

const keysOf = (n: number): string[] =>
  Array.from({ length: n }, (_, i) => `10.0.0.1:80/tcp>10.1.${i >> 8}.${i & 255}`);

describe('IdGroup', () => {
  it('reads as the Map it was made from, in its order', () => {
    const keys = keysOf(3);
    const map = new Map([
      [keys[0]!, 7],
      [keys[1]!, 1],
      [keys[2]!, 0xffffffff],
    ]);
    const g = IdGroup.of(map, keys);
    expect(g.size).toBe(3);
    expect([...g]).toEqual([...map]);
    expect([...g.entries()]).toEqual([...map.entries()]);
    expect([...g.keys()]).toEqual(keys);
    expect([...g.values()]).toEqual([7, 1, 0xffffffff]);
    const seen: string[] = [];
    g.forEach((id, key, m) => {
      expect(m).toBe(g);
      seen.push(`${key}=${id}`);
    });
    expect(seen).toEqual(keys.map((k, i) => `${k}=${[7, 1, 0xffffffff][i]}`));
    expect(g.get(keys[2]!)).toBe(0xffffffff);
    expect(g.get(keys[0]!)).toBe(7);
    expect(g.get('10.0.0.1:80/tcp>10.9.9.9')).toBeUndefined();
    expect(g.has(keys[1]!)).toBe(true);
    expect(g.has('')).toBe(false);
    expect(String(g)).toBe('[object IdGroup]');
  });

  it('keeps the members array itself only when it lists the same keys in the same order', () => {
    const keys = keysOf(4);
    const map = new Map(keys.map((k, i) => [k, i + 1]));
    // the same keys, in order: shared (a later change to the array would show: the caller must not make one)
    const shared = [...keys];
    const g = IdGroup.of(map, shared);
    shared[0] = 'x';
    expect([...g.keys()][0]).toBe('x');
    // another order, fewer keys, or none given: a copy of the map's keys
    for (const members of [[...keys].reverse(), keys.slice(1), undefined]) {
      const own = IdGroup.of(map, members);
      if (members !== undefined) members[0] = 'changed';
      expect([...own.keys()]).toEqual(keys);
    }
  });

  it('rejects an id that is not an integer in 0..2^32-1, naming the key', () => {
    for (const id of [-1, 1.5, 2 ** 32, NaN])
      expect(() => IdGroup.of(new Map([['a>b', id]]))).toThrow(
        `ids: "a>b" has id ${id}, not an integer in 0..2^32-1`,
      );
  });

  it('makes no index for passes over its keys in order, pass after pass; a lookup out of order makes one', () => {
    const keys = keysOf(1000);
    const map = new Map(keys.map((k, i) => [k, i + 1]));
    const g = IdGroup.of(map, keys);
    for (let pass = 0; pass < 3; pass++) for (const k of keys) expect(g.get(k)).toBe(map.get(k));
    // a pass that skips a few (members gone from a VIP's desired state) stays in order too
    for (let i = 0; i < keys.length; i += 3) expect(g.get(keys[i]!)).toBe(i + 1);
    expect(g.get('10.0.0.1:80/tcp>none')).toBeUndefined();
    expect(g.indexed).toBe(true); // a key it lacks is looked up in the index
    const h = IdGroup.of(map, keys);
    for (let pass = 0; pass < 2; pass++) for (const k of keys) h.get(k);
    expect(h.indexed).toBe(false);
    expect(h.get(keys[500]!)).toBe(501);
    expect(h.indexed).toBe(true);
    expect(h.get(keys[501]!)).toBe(502);
  });

  it('answers every lookup as the Map does, in any order (near the last hit, past it, or indexed)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 60 }),
        fc.array(fc.integer({ min: -5, max: 70 }), { maxLength: 200 }),
        (n, lookups) => {
          const keys = keysOf(n);
          const map = new Map(keys.map((k, i) => [k, (i * 7919) % 1000]));
          const g = IdGroup.of(map, keys);
          for (const j of lookups) {
            const key = j >= 0 && j < n ? keys[j]! : `10.0.0.1:80/tcp>none-${j}`;
            expect(g.get(key)).toBe(map.get(key));
            expect(g.has(key)).toBe(map.has(key));
          }
          // then every key in order, as desired state reads a VIP's members
          for (const k of keys) expect(g.get(k)).toBe(map.get(k));
        },
      ),
    );
  });
});
