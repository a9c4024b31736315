// NLRI prefixes on the wire (RFC 4271 §4.3, RFC 4760 §5): a length octet and the significant address octets.
import { maskBytes } from '../../model/ip';
import { AFI_IPV4, formatPrefix, parsePrefix } from '../ip';

/** Wire form of one prefix: length octet + significant address octets. */
export function encodePrefix(prefix: string): Buffer {
  const p = parsePrefix(prefix);
  const n = Math.ceil(p.len / 8);
  return Buffer.concat([Buffer.from([p.len]), p.addr.subarray(0, n)]);
}

/** Bytes an encoded prefix takes in an UPDATE (for packing several into one message). */
export function encodedPrefixSize(prefix: string): number {
  return 1 + Math.ceil(parsePrefix(prefix).len / 8);
}

/** Decode prefixes of one family; null when a length is out of range or the field overruns. */
export function decodePrefixes(b: Buffer, afi: number): string[] | null {
  const max = afi === AFI_IPV4 ? 32 : 128;
  const width = max / 8;
  const out: string[] = [];
  let off = 0;
  while (off < b.length) {
    const len = b[off] as number;
    if (len > max) return null;
    const n = Math.ceil(len / 8);
    if (off + 1 + n > b.length) return null;
    const addr = Buffer.alloc(width);
    b.copy(addr, 0, off + 1, off + 1 + n);
    out.push(formatPrefix({ afi: afi as 1 | 2, addr: maskBytes(addr, len), len }));
    off += 1 + n;
  }
  return out;
}
