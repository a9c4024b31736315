// SpreadMap: a Map of string keys in four shards of unequal shares; it behaves as a Map for what its users ask of
// one, and real keys (addresses, membership keys) spread over the shards near their shares, no two alike in size.
import fc from 'fast-check';
import { SPREAD_LAYOUTS, SpreadMap, spreadBucket } from '../../src/util/spread-map';

describe('SpreadMap', () => {
  it('agrees with a Map under a random mix of sets, gets, has and deletes ', () => {
    const op = fc.oneof(
      fc.record({ k: fc.constant('set' as const), key: fc.string({ maxLength: 6 }), v: fc.integer() }),
      fc.record({ k: fc.constant('delete' as const), key: fc.string({ maxLength: 6 }) }),
      fc.record({ k: fc.constant('get' as const), key: fc.string({ maxLength: 6 }) }),
    );
    fc.assert(
      fc.property(
        fc.constantFrom('a' as const, 'b' as const),
        fc.array(op, { maxLength: 200 }),
        (layout, ops) => {
          const s = new SpreadMap<number>(layout);
          const m = new Map<string, number>();
          for (const o of ops) {
            if (o.k === 'set') {
              expect(s.set(o.key, o.v)).toBe(s);
              m.set(o.key, o.v);
            } else if (o.k === 'delete') expect(s.delete(o.key)).toBe(m.delete(o.key));
            else {
              expect(s.get(o.key)).toBe(m.get(o.key));
              expect(s.has(o.key)).toBe(m.has(o.key));
            }
            expect(s.size).toBe(m.size);
          }
          expect([...s.values()].sort()).toEqual([...m.values()].sort());
        },
      ),
    );
  });

  it('takes keys of any length, the empty one too', () => {
    const s = new SpreadMap<string>();
    for (const k of ['', 'a', 'ab', 'abc']) s.set(k, k.toUpperCase());
    expect(['', 'a', 'ab', 'abc'].map((k) => s.get(k))).toEqual(['', 'A', 'AB', 'ABC']);
    expect(s.size).toBe(4);
    for (const k of ['', 'a']) expect(spreadBucket(k)).toBeGreaterThanOrEqual(0);
  });

  it('spreads addresses and membership keys over its four shards near their shares, no two shards alike in either layout', () => {
    const sets: Record<string, string[]> = { v4: [], keys: [], v6: [], random: [] };
    for (let i = 0; i < 100_000; i++) {
      const a = `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
      sets.v4!.push(a);
      sets.keys!.push(`10.200.${i >> 10}.${(i >> 2) & 255}:80/tcp>${a}`);
      sets.v6!.push(`fd00::${i.toString(16)}`);
      sets.random!.push(`${(i * 7919) % 251}.${(i * 104729) % 256}.${(i * 31) % 256}.${(i * 17) % 253}`);
    }
    for (const layout of ['a', 'b'] as const) {
      const shares = SPREAD_LAYOUTS[layout].map((n) => n / 32);
      for (const [name, keys] of Object.entries(sets)) {
        const m = new SpreadMap<number>(layout);
        keys.forEach((k, i) => m.set(k, i));
        const got = m.shardSizes().map((x) => x / m.size);
        got.forEach((g, s) =>
          expect([layout, name, s, Math.abs(g - shares[s]!) < 0.03]).toEqual([layout, name, s, true]),
        );
      }
    }
    // every share of both layouts differs from every other by 1/32 at least: two maps growing together (one key in
    // each per item) reach their shards' powers of two at different sizes
    const all = [...SPREAD_LAYOUTS.a, ...SPREAD_LAYOUTS.b].sort((x, y) => x - y);
    expect(new Set(all).size).toBe(8);
    for (const l of Object.values(SPREAD_LAYOUTS)) expect(l.reduce((x, y) => x + y, 0)).toBe(32);
  });

  it('refuses nothing a Map takes as a key string, and values() lists each value once', () => {
    const s = new SpreadMap<number>();
    s.set('x', 1).set('x', 2).set('y', 3);
    expect([...s.values()].sort()).toEqual([2, 3]);
    expect(s.delete('x')).toBe(true);
    expect(s.delete('x')).toBe(false);
    expect(s.size).toBe(1);
  });
});
