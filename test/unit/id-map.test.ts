// IdMap: the reconciler mirror's map of backends by id, in an array; checked against a Map on random operations.
import fc from 'fast-check';
import { IdMap } from '../../src/reconcile/id-map';

describe('IdMap', () => {
  it('does what a Map<number, V> does for set, delete, get, has and size; iterates in id order', () => {
    const op = fc.oneof(
      fc.record({ k: fc.constant('set' as const), id: fc.nat(300), v: fc.string() }),
      fc.record({ k: fc.constant('delete' as const), id: fc.nat(300) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const m = new IdMap<string>();
        const ref = new Map<number, string>();
        for (const o of ops) {
          if (o.k === 'set') {
            expect(m.set(o.id, o.v)).toBe(m);
            ref.set(o.id, o.v);
          } else expect(m.delete(o.id)).toBe(ref.delete(o.id));
          expect(m.size).toBe(ref.size);
        }
        const sorted = [...ref].sort((a, b) => a[0] - b[0]);
        expect([...m]).toEqual(sorted);
        expect([...m.entries()]).toEqual(sorted);
        expect([...m.keys()]).toEqual(sorted.map(([id]) => id));
        expect([...m.values()]).toEqual(sorted.map(([, v]) => v));
        for (let id = 0; id <= 301; id++) {
          expect(m.get(id)).toBe(ref.get(id));
          expect(m.has(id)).toBe(ref.has(id));
        }
        const seen: [number, string][] = [];
        m.forEach((v, id, map) => {
          expect(map).toBe(m);
          seen.push([id, v]);
        });
        expect(seen).toEqual(sorted);
      }),
      { numRuns: 300 },
    );
  });

  it('refuses ids that are not small non-negative integers and undefined values; clear empties it', () => {
    const m = new IdMap<number>();
    for (const id of [-1, 1.5, NaN, 2 ** 32])
      expect(() => m.set(id, 1)).toThrow(`id: ${id} is not an integer in 0..4294967294`);
    expect(() => m.set(3, undefined as unknown as number)).toThrow('undefined is not a value');
    m.set(5, 1).set(7, 2);
    expect(m.delete(6)).toBe(false);
    m.clear();
    expect([m.size, [...m], m.get(5)]).toEqual([0, [], undefined]);
  });
});
