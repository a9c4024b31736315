// MurmurHash3 x86_32 (Austin Appleby's reference, public domain) over UTF-8 bytes: the Maglev hash.

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

/** One MurmurHash3_x86_32 block step: mixes the 32-bit word `k` into the state `h`. */
export function murmur3Block(h: number, k: number): number {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, C2);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) >>> 0;
}

/** MurmurHash3_x86_32 finalisation (length in bytes, then fmix32); returns an unsigned 32-bit integer. */
export function murmur3Final(h: number, len: number): number {
  h ^= len;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** MurmurHash3_x86_32 of `data` with a 32-bit seed; returns an unsigned 32-bit integer. */
export function murmur3x86_32(data: Uint8Array, seed: number): number {
  let h = seed >>> 0;
  const len = data.length;
  const blocks = len & ~3;
  for (let i = 0; i < blocks; i += 4)
    h = murmur3Block(h, data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24));
  // Tail: the last 1-3 bytes, little-endian (mixed without the rotate-and-add of a full block).
  const rest = len & 3;
  if (rest > 0) {
    let k = 0;
    if (rest === 3) k ^= data[blocks + 2]! << 16;
    if (rest >= 2) k ^= data[blocks + 1]! << 8;
    k ^= data[blocks]!;
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h ^= k;
  }
  return murmur3Final(h, len);
}

const encoder = new TextEncoder();

/** MurmurHash3_x86_32 of a string's UTF-8 encoding. */
export function murmur3String(text: string, seed: number): number {
  return murmur3Ascii(text, seed) ?? murmur3x86_32(encoder.encode(text), seed);
}

/**
 * murmur3x86_32 of an ASCII string read by char code (its UTF-8 bytes are its char codes), or null when a
 * char is not ASCII. Backend addresses are ASCII: a table build hashes each twice, and encoding each into a
 * fresh Uint8Array first cost a third of the build's hashing.
 */
function murmur3Ascii(text: string, seed: number): number | null {
  let h = seed >>> 0;
  const len = text.length;
  const blocks = len & ~3;
  for (let i = 0; i < blocks; i += 4) {
    const a = text.charCodeAt(i);
    const b = text.charCodeAt(i + 1);
    const c = text.charCodeAt(i + 2);
    const d = text.charCodeAt(i + 3);
    if ((a | b | c | d) > 0x7f) return null;
    h = murmur3Block(h, a | (b << 8) | (c << 16) | (d << 24));
  }
  const rest = len & 3;
  if (rest > 0) {
    let k = 0;
    for (let i = rest - 1; i >= 0; i--) {
      const c = text.charCodeAt(blocks + i);
      if (c > 0x7f) return null;
      k = (k << 8) | c;
    }
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h ^= k;
  }
  return murmur3Final(h, len);
}
