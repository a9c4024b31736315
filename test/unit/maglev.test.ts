// Maglev builder: hash vectors, paper conformance, single backend, weights, determinism, golden tables, churn.
import fc from 'fast-check';
import {
  buildMappedTable,
  buildTable,
  changedFraction,
  isPrime,
  MAGLEV_ALGORITHM,
  MAGLEV_DEFAULT_SIZE,
  MAGLEV_MAX_SIZE,
  mapTable,
  murmur3String,
  murmur3x86_32,
  NO_BACKEND,
  permutationParams,
  probeBackend,
  slotCounts,
  tableNames,
  tailSlots,
} from '../../src/maglev';

const backendsN = (n: number, weight = 1): { name: string; weight: number }[] =>
  Array.from({ length: n }, (_, i) => ({ name: `10.${(i >> 8) & 255}.${i & 255}.1`, weight }));

/** The paper's Populate pseudo-code, generalised to weights by the same credit rule, with full permutations. */
function referenceTable(backends: { name: string; weight: number }[], m: number): string[] {
  const members = backends.filter((b) => b.weight > 0).sort((a, b) => (a.name < b.name ? -1 : 1));
  const perm = members.map((b) => {
    const { offset, skip } = permutationParams(b.name, m);
    return Array.from({ length: m }, (_, j) => (offset + j * skip) % m);
  });
  const next = members.map(() => 0);
  const credit = members.map(() => 0);
  const maxW = Math.max(...members.map((b) => b.weight));
  const entry: string[] = new Array<string>(m).fill('');
  let n = 0;
  for (;;)
    for (let i = 0; i < members.length; i++) {
      credit[i]! += members[i]!.weight;
      if (credit[i]! < maxW) continue;
      credit[i]! -= maxW;
      let c = perm[i]![next[i]!]!;
      while (entry[c] !== '') c = perm[i]![++next[i]!]!;
      entry[c] = members[i]!.name;
      next[i]!++;
      if (++n === m) return entry;
    }
}

/** buildTable as first written (peak-maglev-v1): plain Uint32 slots and the credit rule for every input. */
function straightforwardTable(
  backends: readonly { name: string; weight: number }[],
  size: number,
): Uint32Array {
  const table = new Uint32Array(size).fill(NO_BACKEND);
  const order = backends
    .map((b, i) => ({ ...b, index: i }))
    .filter((b) => b.weight > 0)
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  if (order.length === 0) return table;
  const params = order.map((b) => permutationParams(b.name, size));
  const pos = params.map((p) => p.offset);
  const credit = order.map(() => 0);
  const maxWeight = Math.max(...order.map((b) => b.weight));
  let filled = 0;
  for (;;)
    for (let i = 0; i < order.length; i++) {
      credit[i]! += order[i]!.weight;
      if (credit[i]! < maxWeight) continue;
      credit[i]! -= maxWeight;
      let c = pos[i]!;
      while (table[c] !== NO_BACKEND) c = (c + params[i]!.skip) % size;
      table[c] = order[i]!.index;
      pos[i] = (c + params[i]!.skip) % size;
      if (++filled === size) return table;
    }
}

describe('murmur3x86_32', () => {
  it('matches the reference implementation vectors', () => {
    expect(murmur3String('', 0)).toBe(0);
    expect(murmur3String('', 1)).toBe(0x514e28b7);
    expect(murmur3String('', 0xffffffff)).toBe(0x81f16f39);
    expect(murmur3String('Hello, world!', 1234)).toBe(0xfaf6cdb3);
    expect(murmur3String('The quick brown fox jumps over the lazy dog', 0x9747b28c)).toBe(0x2fa826cd);
    expect(murmur3x86_32(new Uint8Array([0x21, 0x43, 0x65, 0x87]), 0)).toBe(0xf55b516b);
    expect(murmur3x86_32(new Uint8Array([0x21, 0x43, 0x65]), 0)).toBe(0x7e4a8634);
    expect(murmur3x86_32(new Uint8Array([0x21, 0x43]), 0)).toBe(0xa0f7b07a);
    expect(murmur3x86_32(new Uint8Array([0x21]), 0)).toBe(0x72661cf4);
  });

  it('hashes a string as its UTF-8 bytes, ASCII or not, at every tail length', () => {
    const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
    // Non-ASCII in a block and in each tail position: those take the encoding path.
    for (const s of [
      '10.1.2.3',
      '2001:db8::1',
      'é',
      'abcé',
      'abcdé',
      'abcdeé',
      'abcdefé',
      'ab\u007f',
      '\u0080abc',
      '😀x',
    ])
      for (const seed of [0, 0x504b6f31, 0xffffffff])
        expect(murmur3String(s, seed)).toBe(murmur3x86_32(bytes(s), seed));
    fc.assert(
      fc.property(
        fc.string({ maxLength: 40 }),
        fc.fullUnicodeString({ maxLength: 12 }),
        fc.integer(),
        (a, u, seed) => {
          for (const s of [a, u, a + u]) expect(murmur3String(s, seed)).toBe(murmur3x86_32(bytes(s), seed));
        },
      ),
    );
  });
});

describe('isPrime', () => {
  it('classifies small numbers and the default size', () => {
    expect([0, 1, 2, 3, 4, 9, 13, 65536, 65537, 1048573].map(isPrime)).toEqual([
      false,
      false,
      true,
      true,
      false,
      false,
      true,
      false,
      true,
      true,
    ]);
    expect(isPrime(2.5)).toBe(false);
  });
});

describe('buildTable', () => {
  it('has a versioned algorithm id and the paper default size', () => {
    expect(MAGLEV_ALGORITHM).toBe('peak-maglev-v1');
    expect(MAGLEV_DEFAULT_SIZE).toBe(65537);
  });

  it('builds into a given buffer (memory reused) what it builds fresh; refuses one of another size', () => {
    const backends = Array.from({ length: 9 }, (_, i) => ({ name: `10.0.0.${i}:80`, weight: 1 + (i % 3) }));
    const into = new Uint32Array(251).fill(12345).buffer;
    const t = buildTable({ backends, size: 251 }, into);
    expect(t.buffer).toBe(into);
    expect(Array.from(t)).toEqual(Array.from(buildTable({ backends, size: 251 })));
    expect(() => buildTable({ backends, size: 251 }, new ArrayBuffer(250 * 4))).toThrow(
      new RangeError('into: 1000 bytes is not 1004 (4 per slot)'),
    );
  });

  it('fills the whole table with a single backend', () => {
    const t = buildTable({ backends: [{ name: '10.0.0.1', weight: 1 }] });
    expect(t.length).toBe(65537);
    expect(t.every((x) => x === 0)).toBe(true);
  });

  it('returns NO_BACKEND everywhere when no backend has weight', () => {
    expect(buildTable({ backends: [], size: 7 })).toEqual(new Uint32Array(7).fill(NO_BACKEND));
    const t = buildTable({ backends: [{ name: 'a', weight: 0 }], size: 7 });
    expect(Array.from(t)).toEqual(new Array(7).fill(NO_BACKEND));
  });

  it('gives indices into the input order and leaves weight-0 backends out', () => {
    const bs = [
      { name: 'c', weight: 1 },
      { name: 'a', weight: 0 },
      { name: 'b', weight: 1 },
    ];
    const counts = slotCounts(buildTable({ backends: bs, size: 101 }), 3);
    expect(counts[1]).toBe(0);
    expect(counts[0]! + counts[2]!).toBe(101);
    expect(Math.abs(counts[0]! - counts[2]!)).toBeLessThanOrEqual(1);
  });

  it('matches the paper pseudo-code (full permutations) on random inputs', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.record({ name: fc.ipV4(), weight: fc.integer({ min: 0, max: 5 }) }), {
          selector: (b) => b.name,
          minLength: 1,
          maxLength: 12,
        }),
        fc.constantFrom(13, 31, 101, 251),
        (bs, m) => {
          fc.pre(bs.some((b) => b.weight > 0));
          expect(tableNames(buildTable({ backends: bs, size: m }), bs)).toEqual(referenceTable(bs, m));
        },
      ),
      { numRuns: 200 },
    );
  });

  it('equals the straightforward builder on random inputs up to 65537 slots (weights, equal weights, none)', () => {
    let compared = 0;
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.record({ name: fc.ipV4(), weight: fc.integer({ min: 0, max: 4 }) }), {
          selector: (b) => b.name,
          maxLength: 150,
        }),
        fc.boolean(),
        fc.constantFrom(13, 251, 4099, 65537),
        (raw, equal, m) => {
          const bs = equal ? raw.map((b) => ({ ...b, weight: 3 })) : raw;
          const got = buildTable({ backends: bs, size: m });
          expect(Buffer.from(got.buffer).equals(Buffer.from(straightforwardTable(bs, m).buffer))).toBe(true);
          compared++;
        },
      ),
      { numRuns: 60 },
    );
    expect(compared).toBe(60);
  });

  it('fills the last tailSlots(M) free slots as the permutation walks would, at small, default and the largest sizes', () => {
    // fillTail computes each claim instead of walking: the walks stop with exactly tailSlots(M) slots free.
    expect([3, 13, 251, 16381, 65537, MAGLEV_MAX_SIZE].map(tailSlots)).toEqual([1, 3, 11, 91, 181, 724]);
    const sizes = [3, 7, 13, 251, 257, 1021, 16381, 65537, MAGLEV_MAX_SIZE];
    for (const m of sizes)
      for (const n of [1, 2, 5, 40])
        for (const weighted of [false, true]) {
          if (m === MAGLEV_MAX_SIZE && n === 40) continue; // the reference takes seconds there
          const bs = Array.from({ length: n }, (_, i) => ({
            name: `10.${m & 255}.${i}.9:443`,
            weight: weighted ? 1 + ((i * 7) % 5) : 2,
          }));
          const got = buildTable({ backends: bs, size: m });
          const want = straightforwardTable(bs, m);
          expect([m, n, weighted, Buffer.from(got.buffer).equals(Buffer.from(want.buffer))]).toEqual([m, n, weighted, true]); // prettier-ignore
        }
  });

  it('buildMappedTable: mapTable of buildTable in one pass; values above 2^31 - 1 and no backend alike', () => {
    const bs = Array.from({ length: 30 }, (_, i) => ({ name: `10.0.${i}.1`, weight: 1 + (i % 3) }));
    for (const values of [
      Uint32Array.from(bs, (_, i) => i + 1),
      Uint32Array.from(bs, (_, i) => 0x7fffffff - i),
      Uint32Array.from(bs, (_, i) => 0xfffffff0 + (i % 16)), // not int32: mapped after the build
    ])
      for (const m of [13, 4099, 65537]) {
        const as = { values, none: 0 };
        const want = mapTable(buildTable({ backends: bs, size: m }), as);
        expect(Array.from(buildMappedTable({ backends: bs, size: m }, as))).toEqual(Array.from(want));
        const into = new ArrayBuffer(m * 4);
        expect(buildMappedTable({ backends: bs, size: m }, as, into).buffer).toBe(into);
      }
    const none = { values: new Uint32Array(0), none: 0xfffffffe };
    expect(Array.from(buildMappedTable({ backends: [], size: 13 }, none))).toEqual(
      new Array(13).fill(0xfffffffe),
    );
    expect(Array.from(buildMappedTable({ backends: [{ name: 'a', weight: 0 }], size: 7 }, none))).toEqual(
      new Array(7).fill(0xfffffffe),
    );
  });

  it('honours weights proportionally', () => {
    const bs = [
      { name: '10.0.0.1', weight: 1 },
      { name: '10.0.0.2', weight: 2 },
      { name: '10.0.0.3', weight: 3 },
      { name: '10.0.0.4', weight: 4 },
    ];
    const counts = slotCounts(buildTable({ backends: bs }), 4);
    const unit = 65537 / 10;
    bs.forEach((b, i) => expect(Math.abs(counts[i]! / (unit * b.weight) - 1)).toBeLessThan(0.01));
  });

  it('balances 100 equal backends within 1% (max/mean)', () => {
    const counts = slotCounts(buildTable({ backends: backendsN(100) }), 100);
    expect(Math.max(...counts) / (65537 / 100)).toBeLessThanOrEqual(1.01);
    expect(Math.min(...counts)).toBeGreaterThan(0);
  });

  it('is deterministic under any input order', () => {
    const bs = backendsN(40).map((b, i) => ({ ...b, weight: 1 + (i % 4) }));
    const expected = tableNames(buildTable({ backends: bs, size: 4099 }), bs);
    fc.assert(
      fc.property(fc.shuffledSubarray(bs, { minLength: bs.length, maxLength: bs.length }), (shuffled) => {
        expect(tableNames(buildTable({ backends: shuffled, size: 4099 }), shuffled)).toEqual(expected);
      }),
      { numRuns: 30 },
    );
  });

  it('reproduces the golden vectors of peak-maglev-v1', () => {
    const small = buildTable({
      backends: [
        { name: '10.0.0.1', weight: 1 },
        { name: '10.0.0.2', weight: 1 },
        { name: '10.0.0.3', weight: 2 },
      ],
      size: 13,
    });
    expect(Array.from(small)).toEqual([2, 2, 0, 0, 2, 2, 1, 1, 0, 2, 2, 1, 2]);
    expect(permutationParams('10.0.0.1', 65537)).toEqual({ offset: 58239, skip: 36586 });
    expect(permutationParams('2001:db8::1', 65537)).toEqual({ offset: 10323, skip: 57674 });
    const bs = Array.from({ length: 10 }, (_, i) => ({ name: `10.1.0.${i + 1}`, weight: 1 + (i % 3) }));
    const big = buildTable({ backends: bs });
    expect(Array.from(big.slice(0, 16))).toEqual([7, 7, 8, 7, 2, 5, 3, 4, 5, 2, 7, 8, 4, 2, 5, 7]);
    expect(murmur3x86_32(new Uint8Array(big.buffer), 0)).toBe(0x957fff7e);
  });

  it('changes at most 3.5% of slots when 1% of 1000 backends leave, including all of theirs', () => {
    const bs = backendsN(1000);
    const before = tableNames(buildTable({ backends: bs }), bs);
    const kept = bs.filter((_, i) => i % 100 !== 7);
    expect(kept.length).toBe(990);
    const f = changedFraction(before, tableNames(buildTable({ backends: kept }), kept));
    expect(f).toBeGreaterThanOrEqual(0.01);
    expect(f).toBeLessThanOrEqual(0.035);
    // Every slot the removed backends owned changed owner.
    const removed = new Set(bs.filter((_, i) => i % 100 === 7).map((b) => b.name));
    const after = tableNames(buildTable({ backends: kept }), kept);
    expect(before.every((n, s) => !removed.has(n) || after[s] !== n)).toBe(true);
  });

  it('rejects bad input naming the field and value', () => {
    expect(() => buildTable({ backends: [], size: 65536 })).toThrow('size: 65536 is not a prime');
    expect(() => buildTable({ backends: [{ name: 'a', weight: -1 }], size: 7 })).toThrow(
      'backends[0].weight: -1',
    );
    expect(() => buildTable({ backends: [{ name: 'a', weight: 1.5 }], size: 7 })).toThrow(
      'backends[0].weight: 1.5',
    );
    expect(() =>
      buildTable({
        backends: [
          { name: 'a', weight: 1 },
          { name: 'a', weight: 1 },
        ],
        size: 7,
      }),
    ).toThrow('backends[1].name: "a" is a duplicate');
    expect(() => buildTable({ backends: [{ name: '', weight: 1 }], size: 7 })).toThrow('backends[0].name');
  });
});

describe('changedFraction and probeBackend', () => {
  it('counts differing slots', () => {
    expect(changedFraction(['a', 'b', 'c', 'd'], ['a', 'x', 'c', 'y'])).toBe(0.5);
    expect(() => changedFraction(['a'], [])).toThrow('tables differ in size');
  });

  it('probes forward past skipped backends up to the limit, wrapping', () => {
    const table = Uint32Array.from([0, 1, 1, 2, NO_BACKEND]);
    const down = new Set([1]);
    const opts = { table, skipped: (i: number) => down.has(i), probeLimit: 3 };
    expect(probeBackend(opts, 0)).toBe(0);
    expect(probeBackend(opts, 1)).toBe(2);
    expect(probeBackend(opts, 4)).toBe(0);
    expect(probeBackend({ ...opts, probeLimit: 2 }, 1)).toBe(NO_BACKEND);
    down.add(0);
    down.add(2);
    expect(probeBackend({ ...opts, probeLimit: 5 }, 0)).toBe(NO_BACKEND);
  });
});
