// BGP's view of addresses: AFI-tagged prefixes over Buffer, and BGP's error messages. The parsing and
// formatting itself is model/ip (ipaddr.js); nothing here reads an address by hand.
import { isIP } from 'node:net';
import { formatIp, parseIp, parsePrefixBytes } from '../model/ip';

/** Address family identifiers (RFC 4760 AFI). */
export const AFI_IPV4 = 1;
export const AFI_IPV6 = 2;
export type Afi = typeof AFI_IPV4 | typeof AFI_IPV6;

/** A parsed prefix: family, masked address bytes (4 or 16) and length. */
export interface Prefix {
  afi: Afi;
  addr: Buffer;
  len: number;
}

// A zone (fe80::1%eth0) names a local interface; the wire carries the address alone.
const withoutZone = (s: string): string => (isIP(s) === 6 ? (s.split('%')[0] as string) : s);

/** Any IP text -> {afi, bytes}; throws naming the value when malformed. */
export function ipToBytes(s: string): { afi: Afi; bytes: Buffer } {
  const p = typeof s === 'string' ? parseIp(withoutZone(s)) : null;
  if (p === null) throw new TypeError(`"${s}" is not an IP address`);
  return { afi: p.family === 4 ? AFI_IPV4 : AFI_IPV6, bytes: Buffer.from(p.bytes) };
}

/** 'a.b.c.d/n' or 'x::y/n' (a bare address means a host route) -> Prefix; throws naming the value. */
export function parsePrefix(s: string): Prefix {
  if (typeof s !== 'string') throw new TypeError(`prefix must be a string, got ${typeof s}`);
  const slash = s.indexOf('/');
  const text = slash < 0 ? withoutZone(s) : `${withoutZone(s.slice(0, slash))}${s.slice(slash)}`;
  const r = parsePrefixBytes(text);
  if (!r.ok && r.error === 'address') throw new TypeError(`prefix "${s}" does not start with an IP address`);
  if (!r.ok) throw new TypeError(`prefix "${s}" has an invalid length (0..${r.family === 4 ? 32 : 128})`);
  const { family, bytes, prefixLength } = r.prefix;
  return { afi: family === 4 ? AFI_IPV4 : AFI_IPV6, addr: Buffer.from(bytes), len: prefixLength };
}

/** Prefix -> canonical 'addr/len' text. */
export function formatPrefix(p: Prefix): string {
  return `${formatIp(p.addr)}/${p.len}`;
}

/** Canonical text of a prefix string (host bits cleared, RFC 5952 form). */
export function canonicalPrefix(s: string): string {
  return formatPrefix(parsePrefix(s));
}
