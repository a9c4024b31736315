// Pure address helpers, the one place ipaddr.js is used: IPv4/IPv6 parsing, canonical text (RFC 5952),
// prefixes, address <-> integer for ranges, special-purpose ranges, MAC addresses.
import ipaddr from 'ipaddr.js';
import { isIP } from 'node:net';

export type IpFamily = 4 | 6;

/**
 * Parses an IPv4 or IPv6 literal (no zone, no brackets) to bytes; null if it is not one. What is accepted is
 * node's isIP (strict dotted quads: no octal, hex or short forms, which ipaddr.js would also take).
 */
export function parseIp(text: string): { family: IpFamily; bytes: Uint8Array } | null {
  if (typeof text !== 'string') return null;
  // a strict dotted quad is four decimal bytes (what ipaddr.js gives, without its cost: 512k at a restart)
  const v4 = parseDottedQuad(text);
  if (v4 !== null) return { family: 4, bytes: v4 };
  if (text.includes('%')) return null;
  const family = isIP(text);
  if (family !== 6) return null;
  const m = IPV4_COMPATIBLE.exec(text);
  const literal = m ? `::0:${m[1]}` : text;
  return { family, bytes: Uint8Array.from(ipaddr.parse(literal).toByteArray()) };
}

/**
 * The bytes of a strict dotted quad, what node's isIP accepts as IPv4 (four decimal parts 0..255, no leading
 * zeros, nothing else), or null. By hand: isIP's regex, a split and a typed-array copy cost ~1.5 us an
 * address, and a start writes every backend's.
 */
function parseDottedQuad(text: string): Uint8Array | null {
  const out = new Uint8Array(4);
  return dottedQuadInto(text, out, 0) ? out : null;
}

/** parseDottedQuad's bytes written into `out` at `at` (nothing written, false, when `text` is not one). */
function dottedQuadInto(text: string, out: Uint8Array, at: number): boolean {
  const n = text.length;
  if (n < 7 || n > 15) return false;
  let a = 0;
  let b = 0;
  let c = 0;
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= n; i++) {
    const ch = i === n ? 46 : text.charCodeAt(i);
    if (ch === 46) {
      // '.', or the end: a part of 1..3 digits, no leading zero, at most 255
      if (digits === 0 || part > 3) return false;
      if (part === 0) a = value;
      else if (part === 1) b = value;
      else if (part === 2) c = value;
      else if (i === n) {
        out[at] = a;
        out[at + 1] = b;
        out[at + 2] = c;
        out[at + 3] = value;
        return true;
      }
      part++;
      value = 0;
      digits = 0;
    } else if (ch >= 48 && ch <= 57) {
      if (digits > 0 && value === 0) return false;
      value = value * 10 + (ch - 48);
      if (value > 255) return false;
      digits++;
    } else return false;
  }
  return false;
}

/**
 * parseIp's bytes written into `out` at `at` (4 or 16 of them); its family, or 0 (nothing written) when `text` is
 * not an address. A dotted quad allocates nothing: a start encodes every backend's address.
 */
export function writeIp(text: string, out: Uint8Array, at: number): 0 | IpFamily {
  if (typeof text !== 'string') return 0;
  if (dottedQuadInto(text, out, at)) return 4;
  const p = parseIp(text);
  if (p === null) return 0;
  out.set(p.bytes, at);
  return p.family;
}

// ipaddr.js reads the deprecated IPv4-compatible "::a.b.c.d" as IPv4-mapped ::ffff:a.b.c.d; RFC 4291
// 2.5.5.1 (and node, and URL) make it ::a.b.c.d, which "::0:a.b.c.d" spells without the quirk.
const IPV4_COMPATIBLE = /^::(\d+\.\d+\.\d+\.\d+)$/;

/** Canonical text of an address: dotted decimal, or RFC 5952 IPv6 (lower case, longest zero run as ::). */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length !== 4 && bytes.length !== 16)
    throw new TypeError(`an IP address has 4 or 16 bytes, got ${bytes.length}`);
  // join: one flat string (a template of 13+ characters is a rope of 6 cells, kept as long as the text is)
  if (bytes.length === 4) return [bytes[0], bytes[1], bytes[2], bytes[3]].join('.');
  // An IPv4-mapped address stays IPv6 text in hex (::ffff:102:304), as RFC 5952 section 5 allows.
  return ipaddr.fromByteArray(Array.from(bytes)).toString();
}

/** Canonical form of an address literal, or null if it is not one. */
export function canonicalIp(text: string): string | null {
  const p = parseIp(text);
  return p === null ? null : formatIp(p.bytes);
}

/**
 * A link-local address (IPv6 fe80::/10, IPv4 169.254.0.0/16): reached only through a named interface (an IPv6 one
 * needs a scope). False for text that is not an address.
 */
export function isLinkLocal(text: string): boolean {
  const p = parseIp(text);
  return p !== null && ipaddr.fromByteArray(Array.from(p.bytes)).range() === 'linkLocal';
}

/** The IPv4 text of an IPv4-mapped literal (how a dual-stack socket shows an IPv4 peer); other text as is. */
export function unmapIpv4(text: string): string {
  const p = parseIp(text);
  return p !== null && specialAddress(p.bytes) === 'ipv4-mapped' ? formatIp(p.bytes.subarray(12)) : text;
}

/** Family of an address literal: 4, 6, or 0 if it is not one. */
export function ipFamily(text: string): 0 | IpFamily {
  const p = parseIp(text);
  return p === null ? 0 : p.family;
}

/** The address bytes with the bits past `prefixLength` cleared. */
export function maskBytes<T extends Uint8Array>(bytes: T, prefixLength: number): T {
  const mask = maskFor(bytes.length === 4 ? 4 : 6, prefixLength);
  // map makes a new array of the same class (a Buffer stays a Buffer).
  return bytes.map((b, i) => b & (mask[i] ?? 0)) as T;
}

function maskFor(family: IpFamily, prefixLength: number): number[] {
  const cls = family === 4 ? ipaddr.IPv4 : ipaddr.IPv6;
  return cls.subnetMaskFromPrefixLength(prefixLength).toByteArray();
}

export interface IpPrefix {
  /** Canonical address with host bits cleared. */
  prefix: string;
  prefixLength: number;
  family: IpFamily;
}

/** A prefix with its address as bytes (host bits cleared), for encoders. */
export interface IpPrefixBytes {
  family: IpFamily;
  bytes: Uint8Array;
  prefixLength: number;
}

/** Why a prefix text was refused: no address before the slash, or a length that is not 0..32 / 0..128. */
export type PrefixError = 'address' | 'length';

/** Parses "10.0.0.0/24", "2001:db8::/64" or a bare address (a /32 or /128) to bytes; says what is wrong. */
export function parsePrefixBytes(
  text: string,
): { ok: true; prefix: IpPrefixBytes } | { ok: false; error: PrefixError; family?: IpFamily } {
  if (typeof text !== 'string') return { ok: false, error: 'address' };
  const slash = text.indexOf('/');
  const p = parseIp(slash < 0 ? text : text.slice(0, slash));
  if (p === null) return { ok: false, error: 'address' };
  const max = p.family === 4 ? 32 : 128;
  const lenText = slash < 0 ? String(max) : text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > max)
    return { ok: false, error: 'length', family: p.family };
  const prefixLength = Number(lenText);
  return { ok: true, prefix: { family: p.family, bytes: maskBytes(p.bytes, prefixLength), prefixLength } };
}

/** Parses "10.0.0.0/24", "2001:db8::/64" or a bare address (a /32 or /128); null if invalid. */
export function parsePrefix(text: string): IpPrefix | null {
  const r = parsePrefixBytes(text);
  if (!r.ok) return null;
  const { family, bytes, prefixLength } = r.prefix;
  return { prefix: formatIp(bytes), prefixLength, family };
}

/** An address as an unsigned integer (network byte order), so ranges can be compared and walked. */
export function ipToBigInt(bytes: Uint8Array): bigint {
  return bytes.reduce((n, b) => (n << 8n) | BigInt(b), 0n);
}

/** The address of a family whose integer is `n` (inverse of ipToBigInt), in canonical text. */
export function bigIntToIp(n: bigint, family: IpFamily): string {
  const bytes = new Uint8Array(family === 4 ? 4 : 16);
  for (let i = bytes.length - 1; i >= 0; i--) {
    bytes[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return formatIp(bytes);
}

/** First (network) and last (broadcast) address of a prefix, as integers. */
export function prefixBounds(p: IpPrefix): { first: bigint; last: bigint } {
  const cls = p.family === 4 ? ipaddr.IPv4 : ipaddr.IPv6;
  const cidr = `${p.prefix}/${p.prefixLength}`;
  const first = Uint8Array.from(cls.networkAddressFromCIDR(cidr).toByteArray());
  const last = Uint8Array.from(cls.broadcastAddressFromCIDR(cidr).toByteArray());
  return { first: ipToBigInt(first), last: ipToBigInt(last) };
}

/**
 * Special-purpose addresses no VIP, backend or client can have (RFC 6890 subsets): IPv4 0.0.0.0/8 ("this
 * network", 0.0.0.0 itself is 'unspecified'), 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4, 255.255.255.255;
 * IPv6 ::, ::1, fe80::/10, ff00::/8, ::ffff:0:0/96. Class E (240.0.0.0/4) is not one (Linux accepts it).
 * bpf/guard.h drops VIP packets from these sources: keep the two in step.
 */
export type SpecialAddress =
  'unspecified' | 'this-network' | 'loopback' | 'link-local' | 'multicast' | 'broadcast' | 'ipv4-mapped';

type Ranges = Partial<Record<SpecialAddress, [ipaddr.IPv4 | ipaddr.IPv6, number][]>>;
const cidrs = (...texts: string[]): [ipaddr.IPv4 | ipaddr.IPv6, number][] =>
  texts.map((t) => ipaddr.parseCIDR(t));
// The first match wins: 0.0.0.0/32 before 0.0.0.0/8.
const SPECIAL_V4: Ranges = {
  unspecified: cidrs('0.0.0.0/32'),
  'this-network': cidrs('0.0.0.0/8'),
  loopback: cidrs('127.0.0.0/8'),
  'link-local': cidrs('169.254.0.0/16'),
  multicast: cidrs('224.0.0.0/4'),
  broadcast: cidrs('255.255.255.255/32'),
};
const SPECIAL_V6: Ranges = {
  unspecified: cidrs('::/128'),
  loopback: cidrs('::1/128'),
  'link-local': cidrs('fe80::/10'),
  multicast: cidrs('ff00::/8'),
  'ipv4-mapped': cidrs('::ffff:0:0/96'),
};
const ORDINARY = 'ordinary';

/** What is special about an address (4 or 16 bytes), or null for an ordinary unicast address. */
export function specialAddress(bytes: Uint8Array): SpecialAddress | null {
  if (bytes.length !== 4 && bytes.length !== 16)
    throw new TypeError(`an IP address has 4 or 16 bytes, got ${bytes.length}`);
  const addr = ipaddr.fromByteArray(Array.from(bytes));
  const hit = ipaddr.subnetMatch(addr, bytes.length === 4 ? SPECIAL_V4 : SPECIAL_V6, ORDINARY);
  return hit === ORDINARY ? null : (hit as SpecialAddress);
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
