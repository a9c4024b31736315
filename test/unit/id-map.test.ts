// IdMap: the reconciler mirror's map of backends by id, in an array; checked against a Map on random operations.
import fc from 'fast-check';
import { BOUNDS } from '../../src/model/defaults';
import { IdMap, IdSet } from '../../src/reconcile/id-map';

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

describe('IdSet', () => {
  it('does what a Set<number> does for add, has and size (ids across word and growth boundaries)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.nat(200), fc.constantFrom(0, 31, 32, 63, 64, 65_535, 2 ** 24 - 1)), {
          maxLength: 80,
        }),
        (ids) => {
          const s = new IdSet();
          const ref = new Set<number>();
          for (const id of ids) {
            expect(s.add(id)).toBe(s);
            ref.add(id);
            expect(s.size).toBe(ref.size);
          }
          for (const id of [...ids, 1, 33, 201, 65_534, 2 ** 24 - 2, 2 ** 24, 2 ** 31 + 1])
            expect(s.has(id)).toBe(ref.has(id));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('refuses ids that are not backend ids (integers below 2^24); has() of one is false', () => {
    const s = new IdSet().add(0).add(1).add(3);
    expect(BOUNDS.maxBackends.max).toBe(2 ** 24);
    for (const id of [-1, 1.5, NaN, 2 ** 24, 2 ** 32]) {
      expect(() => s.add(id)).toThrow(`id: ${id} is not an integer in 0..16777215`);
      expect(s.has(id)).toBe(false);
    }
    expect(s.size).toBe(3);
  });
});
