// jsonInTurns: the text JSON.stringify(value, jsonReplacer, 2) gives, written in pieces with event-loop turns.
import fc from 'fast-check';
import { jsonChunksInTurns, jsonInTurns, jsonReplacer, jsonText } from '../../src/util/json-turns';
import { CHUNK_BYTES } from '../../src/util/chunk-writer';
import { countTurns } from '../helpers/turn-counter';

/** Values the admin API's documents hold: JSON values, bigints, Maps, undefined (left out or null), Dates. */
const doc = fc.letrec((tie) => ({
  leaf: fc.oneof(
    fc.string(),
    fc.integer(),
    fc.double({ noNaN: false }),
    fc.boolean(),
    fc.constant(null),
    fc.constant(undefined),
    fc.bigInt(),
    fc.date({ noInvalidDate: true }),
  ),
  value: fc.oneof({ depthSize: 'small' }, tie('leaf'), tie('array'), tie('object'), tie('map')),
  array: fc.array(tie('value'), { maxLength: 12 }),
  object: fc.dictionary(fc.string({ maxLength: 6 }), tie('value'), { maxKeys: 12 }),
  map: fc.array(fc.tuple(fc.oneof(fc.string({ maxLength: 4 }), fc.integer()), tie('value')), { maxLength: 8 }).map((e) => new Map(e)), // prettier-ignore
})).value;

describe('jsonInTurns', () => {
  it('writes what JSON.stringify(value, jsonReplacer, 2) writes, at every piece size', async () => {
    await fc.assert(
      fc.asyncProperty(doc, fc.integer({ min: 1, max: 40 }), async (v, piece) => {
        expect(await jsonInTurns(v, { piece, turnMs: 0 })).toBe(JSON.stringify(v, jsonReplacer, 2));
      }),
      { numRuns: 400 },
    );
  });

  it('jsonChunksInTurns: the same text as UTF-8 in Buffers of CHUNK_BYTES at most, bigger pieces on their own', async () => {
    await fc.assert(
      fc.asyncProperty(doc, fc.integer({ min: 1, max: 40 }), async (v, piece) => {
        const chunks = await jsonChunksInTurns(v, { piece, turnMs: 0 });
        const text = JSON.stringify(v, jsonReplacer, 2) as string | undefined;
        expect(chunks === undefined ? undefined : Buffer.concat(chunks).toString()).toBe(text);
      }),
      { numRuns: 200 },
    );
    expect(await jsonChunksInTurns(undefined)).toBeUndefined();
    // ~1.3 MB of text with multi-byte characters: several full chunks, none over the size, characters whole
    const big = Array.from({ length: 20_000 }, (_, i) => ({ i, name: `é€𝄞-${i}` }));
    const text = JSON.stringify(big, jsonReplacer, 2);
    const chunks = (await jsonChunksInTurns(big, { piece: 1024, turnMs: 0 }))!;
    expect(Buffer.concat(chunks).toString()).toBe(text);
    expect(chunks.length).toBeGreaterThan(3);
    expect(chunks.every((c) => c.length <= CHUNK_BYTES && c.length > 0)).toBe(true);
    expect(chunks.every((c) => c.toString() === new TextDecoder('utf-8', { fatal: true }).decode(c))).toBe(
      true,
    );
    // a piece bigger than a chunk (one native write of a long string) is a Buffer of its own
    const long = { s: 'x'.repeat(CHUNK_BYTES + 10) };
    const one = (await jsonChunksInTurns([1, long, 2], { piece: 1, turnMs: 0 }))!;
    expect(Buffer.concat(one).toString()).toBe(JSON.stringify([1, long, 2], jsonReplacer, 2));
    expect(one.some((c) => c.length > CHUNK_BYTES)).toBe(true);
  });

  it('handles the edges: empty containers, all-omitted objects, heavy entries among light ones', async () => {
    const heavy = Array.from({ length: 50 }, (_, i) => ({ i, list: [i, i + 1, { deep: [i] }] }));
    const cases: unknown[] = [
      [],
      {},
      { a: undefined, b: () => 1 },
      [undefined, () => 1, Symbol('s')],
      { a: undefined, big: heavy, c: 1, d: undefined },
      [1, heavy, 2, [heavy], { x: heavy }],
      new Map<unknown, unknown>([
        [1, heavy],
        ['k', 2n],
      ]),
      { empty: { a: undefined }, arr: [[], {}, [[]]] },
      // heavy entries whose toJSON() leaves them out: null in an array, no key in an object
      [1, { toJSON: () => undefined, a: [1, 2, 3] }, 2],
      { a: 1, b: { toJSON: () => undefined, c: [1, 2, 3] } },
      'text',
      12n,
      null,
    ];
    for (const v of cases)
      for (const piece of [1, 2, 3, 7, 64, 2048])
        expect(await jsonInTurns(v, { piece, turnMs: 0 })).toBe(JSON.stringify(v, jsonReplacer, 2));
    expect(await jsonInTurns(undefined)).toBeUndefined();
    expect(jsonText({ a: 1n })).toBe('{\n  "a": "1"\n}');
  });

  it('gives the event loop turns while it writes a big document', async () => {
    const big = { vips: Array.from({ length: 200 }, (_, v) => ({ name: `vip${v}`, backends: Array.from({ length: 500 }, (_, b) => ({ id: v * 500 + b, address: `10.0.${v}.${b}`, state: 'up' })) })) }; // prettier-ignore
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    try {
      const text = await jsonInTurns(big, { piece: 2048, turnMs: 0 });
      expect(text).toBe(JSON.stringify(big, jsonReplacer, 2));
    } finally {
      clearInterval(timer);
    }
    // pieces of 2,048 entries (100,000 backends x 4 entries each: ~200 pieces), a turn after each
    expect(ticks).toBeGreaterThan(50);
  });

  it("a top level heavier than a piece gets a turn after each of its entries (the admin API's sharers join then)", async () => {
    const doc = Object.fromEntries(
      Array.from({ length: 12 }, (_, k) => [`k${k}`, Array.from({ length: 10 }, (_, i) => i)]),
    );
    const counter = countTurns();
    // 12 entries of weight 11 each (132 > 64): each written alone, each followed by a turn; a long turnMs rules the
    // time-based turns out
    const text = await jsonInTurns(doc, { piece: 64, turnMs: 60_000 });
    counter.stop();
    expect(text).toBe(JSON.stringify(doc, jsonReplacer, 2));
    expect(counter.turns).toBeGreaterThanOrEqual(12);
  });

  it('rejects a bad piece size', async () => {
    await expect(jsonInTurns({}, { piece: 0 })).rejects.toThrow('piece: 0 is not a positive integer');
  });
});
