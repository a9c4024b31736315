// ChunkWriter: strings written as UTF-8 into Buffers of CHUNK_BYTES one after another (a bigger string on its own),
// the same bytes as the strings joined.
import fc from 'fast-check';
import { CHUNK_BYTES, ChunkWriter } from '../../src/util/chunk-writer';

describe('ChunkWriter', () => {
  it('gives the UTF-8 of the strings joined, in Buffers of at most CHUNK_BYTES unless one string is bigger', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('é€𝄞', 'x'.repeat(CHUNK_BYTES - 3), 'y'.repeat(CHUNK_BYTES + 5))), { maxLength: 12 }), // prettier-ignore
        (strings) => {
          const w = new ChunkWriter();
          for (const s of strings) w.write(s);
          const chunks = w.finish();
          expect(Buffer.concat(chunks).toString()).toBe(strings.join(''));
          for (const c of chunks) {
            expect(c.length).toBeGreaterThan(0);
            // a chunk over the size is exactly one string written whole
            if (c.length > CHUNK_BYTES) expect(strings).toContain(c.toString());
          }
          // no character is split between chunks
          for (const c of chunks)
            expect(new TextDecoder('utf-8', { fatal: true }).decode(c)).toBe(c.toString());
        },
      ),
      { numRuns: 200 },
    );
  });

  it('fills a chunk before it starts the next, and starts empty again after finish()', () => {
    const w = new ChunkWriter();
    const piece = 'z'.repeat(1000);
    const per = Math.floor(CHUNK_BYTES / 1000);
    for (let i = 0; i < per + 1; i++) w.write(piece);
    const chunks = w.finish();
    expect(chunks.map((c) => c.length)).toEqual([per * 1000, 1000]);
    expect(w.finish()).toEqual([]);
    w.write('a');
    expect(w.finish().map((c) => c.toString())).toEqual(['a']);
  });
});
