// Pure address helpers: IPv4/IPv6 parsing and canonical text (RFC 5952), prefixes, MAC addresses.
import { isIP } from 'node:net';

export type IpFamily = 4 | 6;

/** Parses an IPv4 or IPv6 literal (no zone, no brackets) to bytes; null if it is not one. */
export function parseIp(text: string): { family: IpFamily; bytes: Uint8Array } | null {
  if (typeof text !== 'string' || text.includes('%')) return null;
  const family = isIP(text);
  if (family === 4) return { family: 4, bytes: Uint8Array.from(text.split('.').map(Number)) };
  if (family !== 6) return null;
  const bytes = new Uint8Array(16);
  let head = text;
  let tail4: number[] = [];
  // A trailing dotted quad (::ffff:1.2.3.4) fills the last 4 bytes.
  const lastColon = text.lastIndexOf(':');
  if (text.slice(lastColon + 1).includes('.')) {
    tail4 = text
      .slice(lastColon + 1)
      .split('.')
      .map(Number);
    head = text.slice(0, lastColon + 1) + '0:0';
  }
  const [left, right] = head.includes('::') ? head.split('::') : [head, undefined];
  const parseGroups = (s: string | undefined): number[] =>
    s === undefined || s === '' ? [] : s.split(':').map((g) => parseInt(g, 16));
  const l = parseGroups(left);
  const r = parseGroups(right);
  const groups = [...l, ...new Array<number>(8 - l.length - r.length).fill(0), ...r];
  groups.forEach((g, i) => {
    bytes[i * 2] = g >> 8;
    bytes[i * 2 + 1] = g & 0xff;
  });
  if (tail4.length === 4) bytes.set(tail4, 12);
  return { family: 6, bytes };
}

/** Canonical text of an address: dotted decimal, or RFC 5952 IPv6 (lower case, longest zero run as ::). */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join('.');
  if (bytes.length !== 16) throw new TypeError(`an IP address has 4 or 16 bytes, got ${bytes.length}`);
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(((bytes[i * 2] ?? 0) << 8) | (bytes[i * 2 + 1] ?? 0));
  // Longest run of two or more zero groups (first one on ties) becomes "::".
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]): string => gs.map((g) => g.toString(16)).join(':');
  if (bestLen < 2) return hex(groups);
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`;
}

/** Canonical form of an address literal, or null if it is not one. */
export function canonicalIp(text: string): string | null {
  const p = parseIp(text);
  return p === null ? null : formatIp(p.bytes);
}

/** Family of an address literal: 4, 6, or 0 if it is not one. */
export function ipFamily(text: string): 0 | IpFamily {
  const p = parseIp(text);
  return p === null ? 0 : p.family;
}

export interface IpPrefix {
  /** Canonical address with host bits cleared. */
  prefix: string;
  prefixLength: number;
  family: IpFamily;
}

/** Parses "10.0.0.0/24", "2001:db8::/64" or a bare address (a /32 or /128); null if invalid. */
export function parsePrefix(text: string): IpPrefix | null {
  if (typeof text !== 'string') return null;
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  const p = parseIp(addr);
  if (p === null) return null;
  const max = p.family === 4 ? 32 : 128;
  let len = max;
  if (slash >= 0) {
    const lenText = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(lenText)) return null;
    len = Number(lenText);
    if (len > max) return null;
  }
  const bytes = p.bytes.slice();
  for (let bit = len; bit < max; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { prefix: formatIp(bytes), prefixLength: len, family: p.family };
}

/**
 * Special-purpose addresses no VIP, backend or client can have (RFC 6890 subsets): IPv4 0.0.0.0/8 ("this
 * network", 0.0.0.0 itself is 'unspecified'), 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4, 255.255.255.255;
 * IPv6 ::, ::1, fe80::/10, ff00::/8, ::ffff:0:0/96. Class E (240.0.0.0/4) is not one (Linux accepts it).
 * bpf/guard.h drops VIP packets from these sources: keep the two in step.
 */
export type SpecialAddress =
  'unspecified' | 'this-network' | 'loopback' | 'link-local' | 'multicast' | 'broadcast' | 'ipv4-mapped';

/** What is special about an address (4 or 16 bytes), or null for an ordinary unicast address. */
export function specialAddress(bytes: Uint8Array): SpecialAddress | null {
  const b = (i: number): number => bytes[i] ?? 0;
  if (bytes.length === 4) {
    if (b(0) === 0) return b(1) === 0 && b(2) === 0 && b(3) === 0 ? 'unspecified' : 'this-network';
    if (b(0) === 127) return 'loopback';
    if (b(0) === 169 && b(1) === 254) return 'link-local';
    if ((b(0) & 0xf0) === 0xe0) return 'multicast';
    if (b(0) === 255 && b(1) === 255 && b(2) === 255 && b(3) === 255) return 'broadcast';
    return null;
  }
  if (bytes.length !== 16) throw new TypeError(`an IP address has 4 or 16 bytes, got ${bytes.length}`);
  if (b(0) === 0xff) return 'multicast';
  if (b(0) === 0xfe && (b(1) & 0xc0) === 0x80) return 'link-local';
  const zeros = (from: number, to: number): boolean => bytes.subarray(from, to).every((x) => x === 0);
  if (zeros(0, 15) && b(15) <= 1) return b(15) === 0 ? 'unspecified' : 'loopback';
  if (zeros(0, 10) && b(10) === 0xff && b(11) === 0xff) return 'ipv4-mapped';
  return null;
}

/** "a loopback address", "the broadcast address", ...: how a message names a special address. */
export function describeSpecialAddress(kind: SpecialAddress): string {
  switch (kind) {
    case 'unspecified':
      return 'the unspecified address';
    case 'this-network':
      return 'in 0.0.0.0/8 ("this network")';
    case 'loopback':
      return 'a loopback address';
    case 'link-local':
      return 'a link-local address';
    case 'multicast':
      return 'a multicast address';
    case 'broadcast':
      return 'the broadcast address';
    case 'ipv4-mapped':
      return 'an IPv4-mapped IPv6 address (never on the wire)';
  }
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** Canonical (lower-case, colon-separated) MAC address, or null if the text is not a MAC. */
export function canonicalMac(text: string): string | null {
  if (typeof text !== 'string') return null;
  const t = text.replace(/-/g, ':');
  return MAC_RE.test(t) ? t.toLowerCase() : null;
}
