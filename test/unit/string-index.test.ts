// StringIndex: string keys -> integers by stored hash and value, the key read back through keyOf; it behaves as a
// Map<string, number> under any mix of sets, gets and deletes, through growth and backward-shift deletes.
import fc from 'fast-check';
import { StringIndex, stringHash } from '../../src/util/string-index';

/** A StringIndex and the registry its values lead back to keys by: value v >= 0 is reg[v], v < 0 is reg[-1 - v]. */
function rig(): { ix: StringIndex; valueFor: (key: string, negative: boolean) => number } {
  const reg: string[] = [];
  const ix = new StringIndex((v) => reg[v >= 0 ? v : -1 - v]!);
  const valueFor = (key: string, negative: boolean): number => {
    const n = reg.push(key) - 1;
    return negative ? -1 - n : n;
  };
  return { ix, valueFor };
}

describe('stringHash', () => {
  it('is 32-bit FNV-1a of the UTF-16 code units', () => {
    // reference values of FNV-1a 32 (ASCII, one byte per code unit)
    expect(stringHash('') >>> 0).toBe(0x811c9dc5);
    expect(stringHash('a') >>> 0).toBe(0xe40c292c);
    expect(stringHash('foobar') >>> 0).toBe(0xbf9cf968);
    expect(Number.isInteger(stringHash('10.0.0.1:80/tcp>10.1.2.3'))).toBe(true);
    expect(stringHash('\u20ac')).not.toBe(stringHash('\u00ac'));
  });
});

describe('StringIndex', () => {
  it('agrees with a Map under a random mix of sets, gets, has and deletes', () => {
    const key = fc.string({ maxLength: 4 });
    const op = fc.oneof(
      fc.record({ k: fc.constant('set' as const), key, negative: fc.boolean() }),
      fc.record({ k: fc.constant('delete' as const), key }),
      fc.record({ k: fc.constant('get' as const), key }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
        const { ix, valueFor } = rig();
        const m = new Map<string, number>();
        for (const o of ops) {
          if (o.k === 'set') {
            const v = valueFor(o.key, o.negative);
            expect(ix.set(o.key, v)).toBe(ix);
            m.set(o.key, v);
          } else if (o.k === 'delete') expect(ix.delete(o.key)).toBe(m.delete(o.key));
          else {
            expect(ix.get(o.key)).toBe(m.get(o.key));
            expect(ix.has(o.key)).toBe(m.has(o.key));
          }
          expect(ix.size).toBe(m.size);
        }
        for (const [k, v] of m) expect(ix.get(k)).toBe(v);
        expect([...ix.values()].sort((a, b) => a - b)).toEqual([...m.values()].sort((a, b) => a - b));
      }),
      { numRuns: 300 },
    );
  });

  it('keeps every key through growth and deletes of half of them, at most three quarters full', () => {
    const { ix, valueFor } = rig();
    const keys = Array.from({ length: 50_000 }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:80/tcp>b${i}`); // prettier-ignore
    const vals = keys.map((k) => {
      const v = valueFor(k, false);
      ix.set(k, v);
      return v;
    });
    expect(ix.size).toBe(50_000);
    // 2^16 holds 49,152 at three quarters: 50,000 needed 2^17
    expect(ix.capacity).toBe(2 ** 17);
    for (let i = 0; i < keys.length; i += 2) expect(ix.delete(keys[i]!)).toBe(true);
    expect(ix.size).toBe(25_000);
    for (let i = 0; i < keys.length; i++) expect(ix.get(keys[i]!)).toBe(i % 2 === 0 ? undefined : vals[i]);
    expect(ix.delete(keys[0]!)).toBe(false);
    expect(ix.get('absent')).toBeUndefined();
  });

  it('keeps an entry at its home past the wrap when a delete before the wrap shifts its run back', () => {
    // keys whose home in 16 slots is 14, 15 and 0: the run 14, 15, 0 wraps around the end
    const withHome = (home: number, not: string[] = []): string => {
      for (let i = 0; ; i++)
        if ((stringHash(`k${i}`) & 15) === home && !not.includes(`k${i}`)) return `k${i}`;
    };
    const [a, b, c] = [withHome(14), withHome(15), withHome(0)];
    const { ix, valueFor } = rig();
    const va = valueFor(a, false);
    const vb = valueFor(b, false);
    const vc = valueFor(c, false);
    ix.set(a, va).set(b, vb).set(c, vc);
    expect(ix.capacity).toBe(16);
    expect(ix.delete(a)).toBe(true);
    expect([ix.get(a), ix.get(b), ix.get(c)]).toEqual([undefined, vb, vc]);
    // and one home at 15 behind one at 15 moves back over the wrap when the first goes
    const d = withHome(15, [b]);
    const vd = valueFor(d, false);
    ix.set(d, vd);
    expect(ix.delete(b)).toBe(true);
    expect([ix.get(b), ix.get(c), ix.get(d)]).toEqual([undefined, vc, vd]);
  });

  it('reserves room for many keys at once (no growth while they come), and shrinks to fit after deletes', () => {
    const { ix, valueFor } = rig();
    expect(() => ix.reserve(-1)).toThrow('n: -1 is not a non-negative integer');
    expect(ix.reserve(12)).toBe(false); // 16 hold 12
    expect(ix.reserve(13)).toBe(true);
    expect(ix.capacity).toBe(32);
    expect(ix.reserve(3 * 2 ** 14)).toBe(true);
    expect(ix.capacity).toBe(2 ** 16);
    const keys = Array.from({ length: 3 * 2 ** 14 }, (_, i) => `m${i}`);
    for (const k of keys) ix.set(k, valueFor(k, false));
    expect(ix.capacity).toBe(2 ** 16);
    expect(ix.fit()).toBe(false); // three quarters used
    for (const k of keys.slice(100)) ix.delete(k);
    expect(ix.size).toBe(100);
    expect(ix.fit()).toBe(true);
    expect(ix.capacity).toBe(512); // the least at most 3/8 used: 100 / 512
    expect(ix.fit()).toBe(false);
    keys.slice(0, 100).forEach((k, i) => expect(ix.get(k)).toBe(i));
    expect(ix.get(keys[100]!)).toBeUndefined();
  });

  it('remaps every value at once (the keys stay findable), and a bad map changes nothing', () => {
    const reg: string[] = [];
    const ix = new StringIndex((v) => reg[v]!);
    const keys = Array.from({ length: 100 }, (_, i) => `k${i}`);
    keys.forEach((k, i) => {
      reg[2 * i] = k;
      ix.set(k, 2 * i);
    });
    // the registry renumbered: 2i -> i
    keys.forEach((k, i) => (reg[i] = k));
    ix.remap((v) => v / 2);
    keys.forEach((k, i) => expect(ix.get(k)).toBe(i));
    expect(() => ix.remap((v) => (v === 50 ? 0.5 : v))).toThrow('StringIndex.remap: value 50 mapped to 0.5');
    keys.forEach((k, i) => expect(ix.get(k)).toBe(i));
  });

  it('replaces a value in place (no second entry), and rejects what is not a 32-bit integer above its empty mark', () => {
    const { ix, valueFor } = rig();
    ix.set('k', valueFor('k', true));
    const v = valueFor('k', false);
    ix.set('k', v);
    expect(ix.size).toBe(1);
    expect(ix.get('k')).toBe(v);
    for (const bad of [1.5, NaN, 2 ** 31, -(2 ** 31), Infinity])
      expect(() => ix.set('x', bad)).toThrow(`StringIndex: value ${bad} is not a 32-bit integer`);
    expect(ix.size).toBe(1);
    expect(ix.has('x')).toBe(false);
  });
});
