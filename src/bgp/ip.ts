// Pure IPv4/IPv6 address and prefix helpers over Buffer: parse, format, canonicalise (no network access).
import { isIPv4, isIPv6 } from 'node:net';

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

/** IPv4 dotted quad -> 4 bytes; throws naming the value when malformed. */
export function ipv4ToBytes(s: string): Buffer {
  if (!isIPv4(s)) throw new TypeError(`"${s}" is not an IPv4 address`);
  return Buffer.from(s.split('.').map((x) => Number(x)));
}

/** IPv6 text (any RFC 4291 form, incl. embedded IPv4) -> 16 bytes; throws naming the value when malformed. */
export function ipv6ToBytes(s: string): Buffer {
  if (!isIPv6(s)) throw new TypeError(`"${s}" is not an IPv6 address`);
  let text = s.split('%')[0] as string;
  const out = Buffer.alloc(16);
  // Embedded IPv4 tail becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const b = ipv4ToBytes(v4[1] as string);
    text = text.slice(0, v4.index) + `${b.readUInt16BE(0).toString(16)}:${b.readUInt16BE(2).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? (text.split('::') as [string, string]) : [text, undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/** Any IP text -> {afi, bytes}. */
export function ipToBytes(s: string): { afi: Afi; bytes: Buffer } {
  if (isIPv4(s)) return { afi: AFI_IPV4, bytes: ipv4ToBytes(s) };
  if (isIPv6(s)) return { afi: AFI_IPV6, bytes: ipv6ToBytes(s) };
  throw new TypeError(`"${s}" is not an IP address`);
}

/** 4 or 16 bytes -> canonical text (RFC 5952 for IPv6). */
export function bytesToIp(b: Buffer): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length !== 16) throw new TypeError(`address must be 4 or 16 bytes, got ${b.length}`);
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push(b.readUInt16BE(i));
  // Longest run (>= 2) of zero groups collapses to '::'.
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]): string => xs.map((x) => x.toString(16)).join(':');
  if (bestAt < 0) return hex(g);
  return `${hex(g.slice(0, bestAt))}::${hex(g.slice(bestAt + bestLen))}`;
}

/** Zero the host bits beyond len. */
export function maskBytes(addr: Buffer, len: number): Buffer {
  const out = Buffer.from(addr);
  for (let i = 0; i < out.length; i++) {
    const bits = Math.max(0, Math.min(8, len - i * 8));
    out[i] = (out[i] as number) & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}

/** 'a.b.c.d/n' or 'x::y/n' (a bare address means a host route) -> Prefix; throws naming the value. */
export function parsePrefix(s: string): Prefix {
  if (typeof s !== 'string') throw new TypeError(`prefix must be a string, got ${typeof s}`);
  const slash = s.indexOf('/');
  const addrText = slash < 0 ? s : s.slice(0, slash);
  let parsed: { afi: Afi; bytes: Buffer };
  try {
    parsed = ipToBytes(addrText);
  } catch {
    throw new TypeError(`prefix "${s}" does not start with an IP address`);
  }
  const { afi, bytes } = parsed;
  const max = afi === AFI_IPV4 ? 32 : 128;
  const lenText = slash < 0 ? String(max) : s.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > max)
    throw new TypeError(`prefix "${s}" has an invalid length (0..${max})`);
  const len = Number(lenText);
  return { afi, addr: maskBytes(bytes, len), len };
}

/** Prefix -> canonical 'addr/len' text. */
export function formatPrefix(p: Prefix): string {
  return `${bytesToIp(p.addr)}/${p.len}`;
}

/** Canonical text of a prefix string (host bits cleared, RFC 5952 form). */
export function canonicalPrefix(s: string): string {
  return formatPrefix(parsePrefix(s));
}
