// Packet builder and parser (Ethernet, VLAN, IPv4/IPv6, TCP/UDP/ICMP, IPIP/IP6IP6): tests and `peak-xdp trace`.
// IPv4 (with options, fragments), IPv6, TCP, UDP, ICMP, ICMPv6, and IPIP/IP6IP6/IPv4-in-IPv6 outer headers.
import { encodeAddr, decodeAddr } from './layout';

export const ETH_P_IP = 0x0800;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_8021Q = 0x8100;
export const ETH_P_8021AD = 0x88a8;
export const PROTO = { ICMP: 1, IPIP: 4, TCP: 6, UDP: 17, IPV6: 41, ICMPV6: 58 } as const;
export const TCP_FLAGS = { FIN: 1, SYN: 2, RST: 4, PSH: 8, ACK: 16 } as const;

/** One's-complement sum of `b` (16-bit big-endian words, odd tail padded) added to `acc`, not folded. */
export function sum16(b: Buffer, acc = 0): number {
  for (let i = 0; i + 1 < b.length; i += 2) acc += b.readUInt16BE(i);
  if (b.length % 2) acc += b[b.length - 1]! << 8;
  return acc;
}

/** Internet checksum (RFC 1071) of `b` plus a starting sum. */
export function checksum(b: Buffer, acc = 0): number {
  let s = sum16(b, acc);
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return ~s & 0xffff;
}

function addrBytes(text: string): { family: 4 | 6; bytes: Buffer } {
  const a = encodeAddr('address', text);
  return { family: a.family, bytes: a.bytes.subarray(0, a.family === 4 ? 4 : 16) };
}

function pseudoSum(src: string, dst: string, proto: number, len: number): number {
  const s = addrBytes(src);
  const d = addrBytes(dst);
  let acc = sum16(s.bytes) + sum16(d.bytes);
  if (s.family === 4) acc += proto + len;
  else acc += (len >>> 16) + (len & 0xffff) + proto;
  return acc;
}

export interface Vlan {
  tpid?: number;
  tci: number;
}

export interface EthSpec {
  dst?: string;
  src?: string;
  vlans?: Vlan[];
}

export const MAC_A = '02:00:00:00:00:0a';
export const MAC_B = '02:00:00:00:00:0b';

function macBytes(m: string): Buffer {
  return Buffer.from(m.replace(/:/g, ''), 'hex');
}

/** Ethernet header (+ tags) carrying `ethertype`. */
export function ethHeader(e: EthSpec, ethertype: number): Buffer {
  const vl = e.vlans ?? [];
  const b = Buffer.alloc(14 + 4 * vl.length);
  macBytes(e.dst ?? MAC_B).copy(b, 0);
  macBytes(e.src ?? MAC_A).copy(b, 6);
  let off = 12;
  for (const v of vl) {
    b.writeUInt16BE(v.tpid ?? ETH_P_8021Q, off);
    b.writeUInt16BE(v.tci, off + 2);
    off += 4;
  }
  b.writeUInt16BE(ethertype, off);
  return b;
}

export type L4Spec =
  | { type: 'tcp'; sport: number; dport: number; flags?: number; seq?: number; payload?: Buffer }
  | { type: 'udp'; sport: number; dport: number; payload?: Buffer; noChecksum?: boolean }
  | { type: 'icmp'; icmpType: number; code?: number; rest?: Buffer; payload?: Buffer }
  | { type: 'raw'; proto: number; payload: Buffer };

export interface IpSpec {
  src: string;
  dst: string;
  tos?: number;
  ttl?: number;
  id?: number;
  df?: boolean;
  mf?: boolean;
  fragOffset?: number;
  /** IPv4 options, padded to 4 bytes. */
  options?: Buffer;
  flowLabel?: number;
  /** IPv6: next header to announce instead of the L4 protocol (e.g. an extension header). */
  nextHeader?: number;
}

function l4Bytes(ip: IpSpec, l4: L4Spec): { proto: number; bytes: Buffer } {
  const v6 = addrBytes(ip.src).family === 6;
  switch (l4.type) {
    case 'tcp': {
      const p = l4.payload ?? Buffer.alloc(0);
      const b = Buffer.alloc(20 + p.length);
      b.writeUInt16BE(l4.sport, 0);
      b.writeUInt16BE(l4.dport, 2);
      b.writeUInt32BE(l4.seq ?? 1, 4);
      b[12] = 5 << 4;
      b[13] = l4.flags ?? TCP_FLAGS.ACK;
      b.writeUInt16BE(65535, 14);
      p.copy(b, 20);
      b.writeUInt16BE(checksum(b, pseudoSum(ip.src, ip.dst, PROTO.TCP, b.length)), 16);
      return { proto: PROTO.TCP, bytes: b };
    }
    case 'udp': {
      const p = l4.payload ?? Buffer.alloc(0);
      const b = Buffer.alloc(8 + p.length);
      b.writeUInt16BE(l4.sport, 0);
      b.writeUInt16BE(l4.dport, 2);
      b.writeUInt16BE(b.length, 4);
      p.copy(b, 8);
      if (!l4.noChecksum) {
        const c = checksum(b, pseudoSum(ip.src, ip.dst, PROTO.UDP, b.length));
        b.writeUInt16BE(c === 0 ? 0xffff : c, 6);
      }
      return { proto: PROTO.UDP, bytes: b };
    }
    case 'icmp': {
      const p = l4.payload ?? Buffer.alloc(0);
      const b = Buffer.alloc(8 + p.length);
      b[0] = l4.icmpType;
      b[1] = l4.code ?? 0;
      (l4.rest ?? Buffer.alloc(4)).copy(b, 4, 0, 4);
      p.copy(b, 8);
      const proto = v6 ? PROTO.ICMPV6 : PROTO.ICMP;
      b.writeUInt16BE(checksum(b, v6 ? pseudoSum(ip.src, ip.dst, proto, b.length) : 0), 2);
      return { proto, bytes: b };
    }
    case 'raw':
      return { proto: l4.proto, bytes: l4.payload };
  }
}

/** An IP packet (no Ethernet). */
export function ipPacket(ip: IpSpec, l4: L4Spec): Buffer {
  const s = addrBytes(ip.src);
  const d = addrBytes(ip.dst);
  if (s.family !== d.family) throw new TypeError(`dst: ${ip.dst} is not of the family of src ${ip.src}`);
  const { proto, bytes } = l4Bytes(ip, l4);
  if (s.family === 4) {
    const opt = ip.options ?? Buffer.alloc(0);
    if (opt.length % 4 || opt.length > 40)
      throw new RangeError(`options: length ${opt.length} is not 4k <= 40`);
    const hl = 20 + opt.length;
    const h = Buffer.alloc(hl);
    h[0] = 0x40 | (hl / 4);
    h[1] = ip.tos ?? 0;
    h.writeUInt16BE(hl + bytes.length, 2);
    h.writeUInt16BE(ip.id ?? 0x1234, 4);
    h.writeUInt16BE((ip.df === false ? 0 : 0x4000) | (ip.mf ? 0x2000 : 0) | (ip.fragOffset ?? 0), 6);
    h[8] = ip.ttl ?? 64;
    h[9] = proto;
    s.bytes.copy(h, 12);
    d.bytes.copy(h, 16);
    opt.copy(h, 20);
    h.writeUInt16BE(checksum(h), 10);
    return Buffer.concat([h, bytes]);
  }
  const h = Buffer.alloc(40);
  h.writeUInt32BE(((6 << 28) | ((ip.tos ?? 0) << 20) | ((ip.flowLabel ?? 0) & 0xfffff)) >>> 0, 0);
  h.writeUInt16BE(bytes.length, 4);
  h[6] = ip.nextHeader ?? proto;
  h[7] = ip.ttl ?? 64;
  s.bytes.copy(h, 8);
  d.bytes.copy(h, 24);
  return Buffer.concat([h, bytes]);
}

/** A whole frame: Ethernet (+ tags) + IP packet. */
export function frame(o: { eth?: EthSpec; ip: IpSpec; l4: L4Spec }): Buffer {
  const pkt = ipPacket(o.ip, o.l4);
  return Buffer.concat([ethHeader(o.eth ?? {}, pkt[0]! >> 4 === 4 ? ETH_P_IP : ETH_P_IPV6), pkt]);
}

/** A frame carrying `inner` (an IP packet) inside an outer IPv4/IPv6 header (IPIP, IP6IP6, 4in6). */
export function encapFrame(o: { eth?: EthSpec; outer: IpSpec; inner: Buffer }): Buffer {
  const proto = o.inner[0]! >> 4 === 4 ? PROTO.IPIP : PROTO.IPV6;
  return frame({ eth: o.eth, ip: o.outer, l4: { type: 'raw', proto, payload: o.inner } });
}

/** GUE (bpf/gue.h, variant 0) for `inner`: the 4-byte header and, with `hint`, the previous-owner private
 * data (type 0x50, family, 2 reserved bytes, address): Hlen 2 for an IPv4 hint, 5 for IPv6, 0 without. */
export function gueHeader(inner: Buffer, hint: string | null = null): Buffer {
  const proto = inner[0]! >> 4 === 4 ? PROTO.IPIP : PROTO.IPV6;
  const h = hint === null ? null : addrBytes(hint);
  const opt = h === null ? Buffer.alloc(0) : Buffer.alloc(4 + (h.family === 4 ? 4 : 16));
  if (h !== null) {
    opt[0] = 0x50;
    opt[1] = h.family;
    h.bytes.copy(opt, 4, 0, h.family === 4 ? 4 : 16);
  }
  const base = Buffer.from([opt.length / 4, proto, 0, 0]);
  return Buffer.concat([base, opt]);
}

/** A frame carrying `inner` in GUE over UDP (checksum 0) inside `outer` (IPv4 or IPv6). */
export function gueFrame(o: {
  eth?: EthSpec;
  outer: IpSpec;
  sport: number;
  dport?: number;
  inner: Buffer;
  hint?: string | null;
}): Buffer {
  const payload = Buffer.concat([gueHeader(o.inner, o.hint ?? null), o.inner]);
  return frame({
    eth: o.eth,
    ip: o.outer,
    l4: { type: 'udp', sport: o.sport, dport: o.dport ?? 6080, payload, noChecksum: true },
  });
}

export interface ParsedGue {
  /** Version/C bits (0 for a data message of variant 0). */
  verC: number;
  /** Optional-field length in 32-bit words. */
  hlen: number;
  proto: number;
  flags: number;
  /** The previous-owner hint (private data), or null. */
  hint: { family: 4 | 6; address: string; reserved: number } | null;
  inner: ParsedIp;
}

/** Parses a UDP payload as GUE (bpf/gue.h); throws on anything malformed. */
export function parseGue(b: Buffer): ParsedGue {
  if (b.length < 4) fail(`GUE header of ${b.length} bytes`);
  const hlen = b[0]! & 0x1f;
  const optEnd = 4 + hlen * 4;
  if (b.length < optEnd) fail(`GUE Hlen ${hlen} with ${b.length} bytes`);
  let hint: ParsedGue['hint'] = null;
  if (hlen > 0) {
    if (b[4] !== 0x50) fail(`GUE private data type ${b[4]}`);
    const family = b[5];
    if (family !== 4 && family !== 6) fail(`GUE hint family ${family}`);
    if (hlen !== (family === 4 ? 2 : 5)) fail(`GUE Hlen ${hlen} for an IPv${family} hint`);
    const n = family === 4 ? 4 : 16;
    const addr = Buffer.alloc(16);
    b.copy(addr, 0, 8, 8 + n);
    hint = { family, address: decodeAddr(addr, family), reserved: b.readUInt16BE(6) };
  }
  return {
    verC: b[0]! >> 5,
    hlen,
    proto: b[1]!,
    flags: b.readUInt16BE(2),
    hint,
    inner: parseIp(b.subarray(optEnd)),
  };
}

// ---- parser ----------------------------------------------------------------------------------------

export interface ParsedL4 {
  kind: 'tcp' | 'udp' | 'icmp' | 'icmpv6' | 'other';
  sport?: number;
  dport?: number;
  flags?: number;
  icmpType?: number;
  icmpCode?: number;
  /** Bytes 4..7 of an ICMP header (e.g. the MTU of a too-big message). */
  icmpRest?: Buffer;
  /** Checksum over the L4 segment correct (UDP over IPv4 with checksum 0 counts as correct). */
  checksumOk: boolean;
  body: Buffer;
}

export interface ParsedIp {
  version: 4 | 6;
  src: string;
  dst: string;
  proto: number;
  tos: number;
  ttl: number;
  headerLength: number;
  totalLength: number;
  df: boolean;
  fragment: boolean;
  flowLabel: number;
  /** IPv4 header checksum correct (always true for IPv6). */
  headerChecksumOk: boolean;
  /** The IP packet as its header delimits it. */
  raw: Buffer;
  l4?: ParsedL4;
  /** Set for IPIP / IPv6-in-IP packets. */
  inner?: ParsedIp;
}

export interface ParsedFrame {
  dst: string;
  src: string;
  vlans: Vlan[];
  ethertype: number;
  ip?: ParsedIp;
}

function mac(b: Buffer): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}

function parseL4(ip: ParsedIp, seg: Buffer, quoted: boolean): ParsedL4 | undefined {
  const pseudo = (proto: number) => pseudoSum(ip.src, ip.dst, proto, seg.length);
  switch (ip.proto) {
    case PROTO.TCP:
      if (seg.length < 20) return quoted ? undefined : fail(`TCP segment of ${seg.length} bytes`);
      return {
        kind: 'tcp',
        sport: seg.readUInt16BE(0),
        dport: seg.readUInt16BE(2),
        flags: seg[13],
        checksumOk: checksum(seg, pseudo(PROTO.TCP)) === 0,
        body: seg.subarray(20),
      };
    case PROTO.UDP:
      if (seg.length < 8) return quoted ? undefined : fail(`UDP datagram of ${seg.length} bytes`);
      return {
        kind: 'udp',
        sport: seg.readUInt16BE(0),
        dport: seg.readUInt16BE(2),
        checksumOk: (ip.version === 4 && seg.readUInt16BE(6) === 0) || checksum(seg, pseudo(PROTO.UDP)) === 0,
        body: seg.subarray(8),
      };
    case PROTO.ICMP:
    case PROTO.ICMPV6: {
      if (seg.length < 8) return quoted ? undefined : fail(`ICMP message of ${seg.length} bytes`);
      const v6 = ip.proto === PROTO.ICMPV6;
      return {
        kind: v6 ? 'icmpv6' : 'icmp',
        icmpType: seg[0],
        icmpCode: seg[1],
        icmpRest: seg.subarray(4, 8),
        checksumOk: checksum(seg, v6 ? pseudo(PROTO.ICMPV6) : 0) === 0,
        body: seg.subarray(8),
      };
    }
  }
  return { kind: 'other', checksumOk: true, body: seg };
}

function fail(what: string): never {
  throw new Error(`malformed packet: ${what}`);
}

/** Parses an IP packet; `quoted` = inside an ICMP error (may be cut short, checksums not checked). */
export function parseIp(b: Buffer, quoted = false): ParsedIp {
  if (b.length < 1) fail('empty IP packet');
  const version = b[0]! >> 4;
  if (version === 4) {
    if (b.length < 20) fail(`IPv4 header of ${b.length} bytes`);
    const hl = (b[0]! & 0xf) * 4;
    const tot = b.readUInt16BE(2);
    if (hl < 20 || b.length < hl) fail(`IPv4 IHL ${hl} in ${b.length} bytes`);
    if (!quoted && (tot < hl || tot > b.length)) fail(`IPv4 total length ${tot} with ${b.length} bytes`);
    const fo = b.readUInt16BE(6);
    const raw = b.subarray(0, quoted ? Math.min(tot, b.length) : tot);
    const ip: ParsedIp = {
      version: 4,
      src: decodeAddr(Buffer.concat([b.subarray(12, 16), Buffer.alloc(12)]), 4),
      dst: decodeAddr(Buffer.concat([b.subarray(16, 20), Buffer.alloc(12)]), 4),
      proto: b[9]!,
      tos: b[1]!,
      ttl: b[8]!,
      headerLength: hl,
      totalLength: tot,
      df: (fo & 0x4000) !== 0,
      fragment: (fo & 0x3fff) !== 0,
      flowLabel: 0,
      headerChecksumOk: checksum(b.subarray(0, hl)) === 0,
      raw,
    };
    if (!ip.fragment) finishL4(ip, raw.subarray(hl), quoted);
    return ip;
  }
  if (version === 6) {
    if (b.length < 40) fail(`IPv6 header of ${b.length} bytes`);
    const plen = b.readUInt16BE(4);
    if (!quoted && 40 + plen > b.length) fail(`IPv6 payload length ${plen} with ${b.length} bytes`);
    const w0 = b.readUInt32BE(0);
    const raw = b.subarray(0, Math.min(40 + plen, b.length));
    const ip: ParsedIp = {
      version: 6,
      src: decodeAddr(b.subarray(8, 24), 6),
      dst: decodeAddr(b.subarray(24, 40), 6),
      proto: b[6]!,
      tos: (w0 >>> 20) & 0xff,
      ttl: b[7]!,
      headerLength: 40,
      totalLength: 40 + plen,
      df: true,
      fragment: b[6] === 44,
      flowLabel: w0 & 0xfffff,
      headerChecksumOk: true,
      raw,
    };
    finishL4(ip, raw.subarray(40), quoted);
    return ip;
  }
  return fail(`IP version ${version}`);
}

function finishL4(ip: ParsedIp, payload: Buffer, quoted: boolean): void {
  if (ip.proto === PROTO.IPIP || ip.proto === PROTO.IPV6) {
    ip.inner = parseIp(payload, quoted);
    const want = ip.proto === PROTO.IPIP ? 4 : 6;
    if (ip.inner.version !== want) fail(`protocol ${ip.proto} carrying IPv${ip.inner.version}`);
    return;
  }
  ip.l4 = parseL4(ip, payload, quoted);
}

/** Parses a frame; throws on anything malformed. */
export function parseFrame(b: Buffer): ParsedFrame {
  if (b.length < 14) fail(`frame of ${b.length} bytes`);
  const out: ParsedFrame = {
    dst: mac(b.subarray(0, 6)),
    src: mac(b.subarray(6, 12)),
    vlans: [],
    ethertype: 0,
  };
  let off = 12;
  let et = b.readUInt16BE(off);
  while (et === ETH_P_8021Q || et === ETH_P_8021AD) {
    if (b.length < off + 6) fail('truncated VLAN tag');
    out.vlans.push({ tpid: et, tci: b.readUInt16BE(off + 2) });
    off += 4;
    et = b.readUInt16BE(off);
  }
  out.ethertype = et;
  if (et === ETH_P_IP || et === ETH_P_IPV6) {
    out.ip = parseIp(b.subarray(off + 2));
    if (out.ip.version !== (et === ETH_P_IP ? 4 : 6)) fail(`ethertype ${et} carrying IPv${out.ip.version}`);
  }
  return out;
}

/** Offset of the IP header in a frame (after Ethernet and tags). */
export function l3Offset(b: Buffer): number {
  let off = 12;
  while (b.readUInt16BE(off) === ETH_P_8021Q || b.readUInt16BE(off) === ETH_P_8021AD) off += 4;
  return off + 2;
}
