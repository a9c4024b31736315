// Communities (RFC 1997) and large communities (RFC 8092): text forms and attribute values.
import { parseCommunity, parseLargeCommunity } from '../../model/bgp';

// The text syntax belongs to the config model (the bgp section checks it); the codec encodes with it.
export { parseCommunity, parseLargeCommunity };

const u32 = (x: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(x, 0);
  return b;
};

/** COMMUNITIES value: 4 octets per 'asn:value'. */
export function encodeCommunities(list: string[]): Buffer {
  return Buffer.concat(list.map((c) => u32(parseCommunity(c))));
}

/** LARGE_COMMUNITY value: 12 octets per 'global:local1:local2'. */
export function encodeLargeCommunities(list: string[]): Buffer {
  return Buffer.concat(list.map((c) => Buffer.concat(parseLargeCommunity(c).map(u32))));
}

/** COMMUNITIES value -> 'asn:value' list; null when the length is not a positive multiple of 4. */
export function decodeCommunities(v: Buffer): string[] | null {
  if (v.length === 0 || v.length % 4 !== 0) return null;
  const out: string[] = [];
  for (let i = 0; i < v.length; i += 4) out.push(`${v.readUInt16BE(i)}:${v.readUInt16BE(i + 2)}`);
  return out;
}

/** LARGE_COMMUNITY value -> 'g:l1:l2' list; null when the length is not a positive multiple of 12. */
export function decodeLargeCommunities(v: Buffer): string[] | null {
  if (v.length === 0 || v.length % 12 !== 0) return null;
  const out: string[] = [];
  for (let i = 0; i < v.length; i += 12)
    out.push(`${v.readUInt32BE(i)}:${v.readUInt32BE(i + 4)}:${v.readUInt32BE(i + 8)}`);
  return out;
}
