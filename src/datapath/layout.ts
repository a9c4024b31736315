// Encoders/decoders for the bpf/shared.h structs (sizes and offsets checked against BTF by a test).
// Numbers userspace and the program share are host order (little-endian); ports and addresses are wire order.
import { formatIp, writeIp } from '../model/ip';
import { sharedContract } from './contract';
import type { BackendEncap, BackendState, Protocol } from './types';

/** Byte offsets of every field, by struct name as in shared.h; test/bpf/layout.test.ts compares with BTF. */
export const LAYOUT = {
  peak_vip_key: { size: 20, fields: { addr: 0, port: 16, proto: 18, family: 19 } },
  peak_vip_value: { size: 12, fields: { vip_id: 0, flags: 4, table_size: 8 } },
  peak_addr_key: { size: 20, fields: { addr: 0, family: 16, pad: 17 } },
  peak_backend: { size: 20, fields: { addr: 0, family: 16, state: 17, encap: 18, pad: 19 } },
  peak_flow_key: {
    size: 40,
    fields: { src: 0, dst: 16, sport: 32, dport: 34, proto: 36, family: 37, pad: 38 },
  },
  peak_ct_value: { size: 16, fields: { backend_id: 0, vip_id: 4, hash: 8, last_seen: 12 } },
  peak_vip_slot: { size: 32, fields: { key: 0, value: 20 } },
  peak_vip_index_head: { size: 32, fields: { seed: 0, flags: 4, keys: 8, pad: 12 } },
  peak_config: {
    size: 52,
    fields: {
      own_mac: 0,
      next_hop_mac: 6,
      src_v4: 12,
      src_v6: 16,
      src_v4_len: 32,
      src_v6_len: 33,
      mtu: 34,
      flags: 36,
      ct_timeout_tcp: 40,
      ct_timeout_udp: 44,
      gue_port: 48,
      pad: 50,
    },
  },
  peak_traffic: { size: 16, fields: { packets: 0, bytes: 8 } },
} as const;

/** Enum values the encoders use; checked against the BTF enums of the same names. */
export const ENUMS = {
  peak_family: { PEAK_FAMILY_NONE: 0, PEAK_FAMILY_V4: 4, PEAK_FAMILY_V6: 6 },
  peak_vip_flag: { PEAK_VIP_F_SRC_HASH: 1, PEAK_VIP_F_NO_CT: 2, PEAK_VIP_F_STATELESS: 4 },
  peak_backend_encap: { PEAK_ENCAP_IPIP: 0, PEAK_ENCAP_GUE: 1 },
  peak_backend_state: { PEAK_BE_NONE: 0, PEAK_BE_UP: 1, PEAK_BE_DRAINING: 2, PEAK_BE_DOWN: 3 },
  peak_config_flag: { PEAK_CFG_F_READY: 1, PEAK_CFG_F_FIB: 2 },
  peak_vip_index_flag: { PEAK_VIP_INDEX_F_USE_HASH: 1 },
} as const;

/** GUE's UDP destination port when the caller gives none (bpf/gue.h PEAK_GUE_DEFAULT_PORT, Katran's too). */
export const DEFAULT_GUE_PORT = 6080;

/** GUE wire constants (bpf/gue.h; plain #defines, so not in BTF: test/bpf/gue-encap.test.ts checks frames). */
export const GUE = {
  hintType: 0x50,
  /** Outer UDP source port of a flow hash (PEAK_GUE_SPORT). */
  sourcePort: (hash: number): number => 0xc000 | (hash & 0x3fff),
} as const;

/** Idle timeouts (seconds) of connection-table entries when the caller gives none: IPVS's TCP and UDP. */
export const DEFAULT_CT_TIMEOUTS = { tcp: 900, udp: 300 } as const;

export const PROTO_NUMBER: Record<Protocol, number> = { tcp: 6, udp: 17 };
const PROTO_NAME: Record<number, Protocol> = { 6: 'tcp', 17: 'udp' };

/** Backend states as enum peak_backend_state encodes them (NONE is an unset slot, not a state). */
const STATE_NUMBER: Record<BackendState, number> = {
  up: ENUMS.peak_backend_state.PEAK_BE_UP,
  draining: ENUMS.peak_backend_state.PEAK_BE_DRAINING,
  down: ENUMS.peak_backend_state.PEAK_BE_DOWN,
};
const ENCAP_NUMBER: Record<BackendEncap, number> = {
  ipip: ENUMS.peak_backend_encap.PEAK_ENCAP_IPIP,
  gue: ENUMS.peak_backend_encap.PEAK_ENCAP_GUE,
};
const STATE_NAME: Record<number, BackendState> = Object.fromEntries(
  Object.entries(STATE_NUMBER).map(([name, n]) => [n, name as BackendState]),
);

export type Family = 4 | 6;

/** An address as the datapath stores it: 16 bytes (IPv4 in the first 4) and its family. */
export interface WireAddr {
  family: Family;
  bytes: Buffer;
}

/** Parses an address; `field` names it in the error. */
export function encodeAddr(field: string, text: unknown): WireAddr {
  const bytes = Buffer.alloc(16);
  const family = typeof text === 'string' ? writeIp(text, bytes, 0) : 0;
  if (family === 0) throw new TypeError(`${field}: ${JSON.stringify(text)} is not an IPv4 or IPv6 address`);
  return { family, bytes };
}

/** Text of a stored 16-byte address of `family`. */
export function decodeAddr(bytes: Buffer, family: number): string {
  if (family === 4) return formatIp(bytes.subarray(0, 4));
  if (family === 6) return formatIp(bytes.subarray(0, 16));
  throw new RangeError(`family: ${family} is not 4 or 6`);
}

function checkUint(field: string, v: unknown, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max)
    throw new RangeError(`${field}: ${JSON.stringify(v)} is not an integer in 0..${max}`);
  return v;
}

function protoNumber(field: string, p: unknown): number {
  const n = typeof p === 'string' ? PROTO_NUMBER[p as Protocol] : undefined;
  if (n === undefined) throw new TypeError(`${field}: ${JSON.stringify(p)} is not tcp or udp`);
  return n;
}

export interface VipKeyFields {
  address: string;
  port: number;
  protocol: Protocol;
}

export function encodeVipKey(k: VipKeyFields): Buffer {
  const a = encodeAddr('key.address', k.address);
  const b = Buffer.alloc(LAYOUT.peak_vip_key.size);
  a.bytes.copy(b, LAYOUT.peak_vip_key.fields.addr);
  b.writeUInt16BE(checkUint('key.port', k.port, 65535), LAYOUT.peak_vip_key.fields.port);
  b[LAYOUT.peak_vip_key.fields.proto] = protoNumber('key.protocol', k.protocol);
  b[LAYOUT.peak_vip_key.fields.family] = a.family;
  return b;
}

export function decodeVipKey(b: Buffer): VipKeyFields {
  const f = LAYOUT.peak_vip_key.fields;
  const proto = PROTO_NAME[b[f.proto]!];
  if (!proto) throw new RangeError(`vip key proto: ${b[f.proto]} is not tcp or udp`);
  return {
    address: decodeAddr(b.subarray(f.addr, f.addr + 16), b[f.family]!),
    port: b.readUInt16BE(f.port),
    protocol: proto,
  };
}

export interface VipValueFields {
  vipId: number;
  sourceHash: boolean;
  noConntrack: boolean;
  /** PEAK_VIP_F_STATELESS; absent = false. */
  stateless?: boolean;
  tableSize: number;
}

export function encodeVipValue(v: VipValueFields): Buffer {
  const f = LAYOUT.peak_vip_value.fields;
  const b = Buffer.alloc(LAYOUT.peak_vip_value.size);
  b.writeUInt32LE(checkUint('id', v.vipId, 0xffffffff), f.vip_id);
  const flags =
    (v.sourceHash ? ENUMS.peak_vip_flag.PEAK_VIP_F_SRC_HASH : 0) |
    (v.noConntrack ? ENUMS.peak_vip_flag.PEAK_VIP_F_NO_CT : 0) |
    (v.stateless === true ? ENUMS.peak_vip_flag.PEAK_VIP_F_STATELESS : 0);
  b.writeUInt32LE(flags, f.flags);
  b.writeUInt32LE(checkUint('tableSize', v.tableSize, 0xffffffff), f.table_size);
  return b;
}

export function decodeVipValue(b: Buffer): VipValueFields {
  const f = LAYOUT.peak_vip_value.fields;
  const flags = b.readUInt32LE(f.flags);
  return {
    vipId: b.readUInt32LE(f.vip_id),
    sourceHash: (flags & ENUMS.peak_vip_flag.PEAK_VIP_F_SRC_HASH) !== 0,
    noConntrack: (flags & ENUMS.peak_vip_flag.PEAK_VIP_F_NO_CT) !== 0,
    // only when set, so VipSpecs written without the flag read back equal
    ...((flags & ENUMS.peak_vip_flag.PEAK_VIP_F_STATELESS) !== 0 ? { stateless: true } : {}),
    tableSize: b.readUInt32LE(f.table_size),
  };
}

/** vip_addrs key of an address. */
export function encodeAddrKey(field: string, address: string): Buffer {
  const a = encodeAddr(field, address);
  const b = Buffer.alloc(LAYOUT.peak_addr_key.size);
  a.bytes.copy(b, LAYOUT.peak_addr_key.fields.addr);
  b[LAYOUT.peak_addr_key.fields.family] = a.family;
  return b;
}

export interface BackendFields {
  address: string;
  state: BackendState;
  /** Absent = ipip; decodeBackend reports it only when gue (so specs written without it read back equal). */
  encap?: BackendEncap;
}

export function encodeBackend(v: BackendFields): Buffer {
  const b = Buffer.alloc(LAYOUT.peak_backend.size);
  encodeBackendInto(v, b, 0);
  return b;
}

/**
 * encodeBackend written at `at` of `out` (its bytes there zeroed first): a batch of backends is encoded in
 * place, with no buffer per backend. Throws, writing nothing, on a bad field.
 */
export function encodeBackendInto(v: BackendFields, out: Buffer, at: number): void {
  const f = LAYOUT.peak_backend.fields;
  const state = STATE_NUMBER[v.state];
  if (state === undefined)
    throw new TypeError(`state: ${JSON.stringify(v.state)} is not up, draining or down`);
  const encap = ENCAP_NUMBER[v.encap ?? 'ipip'];
  if (encap === undefined) throw new TypeError(`encap: ${JSON.stringify(v.encap)} is not ipip or gue`);
  // the address is the last check: writeIp writes nothing for a bad one, so a refused record leaves `out` as it was
  const family = typeof v.address === 'string' ? writeIp(v.address, out, at + f.addr) : 0;
  if (family === 0)
    throw new TypeError(`address: ${JSON.stringify(v.address)} is not an IPv4 or IPv6 address`);
  // the rest of the record zeroed byte by byte: two Buffer#fill calls were most of a backend's ~0.7 us (51,200 a
  // start at 512 x 100)
  const addrFrom = at + f.addr;
  const addrTo = addrFrom + (family === 4 ? 4 : 16);
  for (let k = at, end = at + LAYOUT.peak_backend.size; k < end; k++)
    if (k < addrFrom || k >= addrTo) out[k] = 0;
  out[at + f.family] = family;
  out[at + f.state] = state;
  out[at + f.encap] = encap;
}

/** null for an unset slot (family NONE). */
export function decodeBackend(b: Buffer): BackendFields | null {
  const f = LAYOUT.peak_backend.fields;
  const family = b[f.family]!;
  if (family === 0) return null;
  const state = STATE_NAME[b[f.state]!];
  if (!state) throw new RangeError(`backend state: ${b[f.state]} is not up, draining or down`);
  const encap = b[f.encap]!;
  if (encap !== ENCAP_NUMBER.ipip && encap !== ENCAP_NUMBER.gue)
    throw new RangeError(`backend encap: ${encap} is not ipip (0) or gue (1)`);
  const address = decodeAddr(b.subarray(f.addr, f.addr + 16), family);
  return encap === ENCAP_NUMBER.gue ? { address, state, encap: 'gue' } : { address, state };
}

export interface FlowFields {
  source: string;
  sourcePort: number;
  destination: string;
  destinationPort: number;
  /** IP protocol number. */
  proto: number;
}

export function encodeFlowKey(k: FlowFields): Buffer {
  const f = LAYOUT.peak_flow_key.fields;
  const s = encodeAddr('source', k.source);
  const d = encodeAddr('destination', k.destination);
  if (s.family !== d.family)
    throw new TypeError(`destination: ${k.destination} is not of the family of source ${k.source}`);
  const b = Buffer.alloc(LAYOUT.peak_flow_key.size);
  s.bytes.copy(b, f.src);
  d.bytes.copy(b, f.dst);
  b.writeUInt16BE(checkUint('sourcePort', k.sourcePort, 65535), f.sport);
  b.writeUInt16BE(checkUint('destinationPort', k.destinationPort, 65535), f.dport);
  b[f.proto] = checkUint('proto', k.proto, 255);
  b[f.family] = s.family;
  return b;
}

export function decodeFlowKey(b: Buffer): FlowFields {
  const f = LAYOUT.peak_flow_key.fields;
  const family = b[f.family]!;
  return {
    source: decodeAddr(b.subarray(f.src, f.src + 16), family),
    destination: decodeAddr(b.subarray(f.dst, f.dst + 16), family),
    sourcePort: b.readUInt16BE(f.sport),
    destinationPort: b.readUInt16BE(f.dport),
    proto: b[f.proto]!,
  };
}

export interface CtValueFields {
  backendId: number;
  /** The VIP the entry was written for (without the closed mark). */
  vipId: number;
  /** The flow hash the datapath computed when it chose the backend (0 in a closed entry: not stored). */
  hash: number;
  /** Low 32 bits of jiffies at the flow's last packet. */
  lastSeen: number;
  /** The sequence number of the client's FIN or RST once it ended the connection (the entry serves only the
   * connection's tail, flowhash.ts ctTail); null while open. Stored in the hash field. */
  closedSeq: number | null;
}

export function encodeCtValue(v: Omit<CtValueFields, 'closedSeq'> & { closedSeq?: number | null }): Buffer {
  const f = LAYOUT.peak_ct_value.fields;
  const b = Buffer.alloc(LAYOUT.peak_ct_value.size);
  const closedBit = sharedContract().ctClosedBit;
  const closed = v.closedSeq !== undefined && v.closedSeq !== null;
  b.writeUInt32LE(checkUint('backendId', v.backendId, 0xffffffff), f.backend_id);
  const vipId = checkUint('vipId', v.vipId, 2 ** closedBit - 1);
  b.writeUInt32LE((closed ? vipId + 2 ** closedBit : vipId) >>> 0, f.vip_id);
  b.writeUInt32LE(closed ? checkUint('closedSeq', v.closedSeq!, 0xffffffff) : checkUint('hash', v.hash, 0xffffffff), f.hash); // prettier-ignore
  b.writeUInt32LE(checkUint('lastSeen', v.lastSeen, 0xffffffff), f.last_seen);
  return b;
}

export function decodeCtValue(b: Buffer): CtValueFields {
  const f = LAYOUT.peak_ct_value.fields;
  const closedBit = sharedContract().ctClosedBit;
  const raw = b.readUInt32LE(f.vip_id);
  const closed = raw >= 2 ** closedBit;
  return {
    backendId: b.readUInt32LE(f.backend_id),
    vipId: closed ? raw - 2 ** closedBit : raw,
    hash: closed ? 0 : b.readUInt32LE(f.hash),
    lastSeen: b.readUInt32LE(f.last_seen),
    closedSeq: closed ? b.readUInt32LE(f.hash) : null,
  };
}

/** A VIP index slot: the vips key and value side by side. */
export function encodeVipSlot(key: Buffer, value: Buffer): Buffer {
  const f = LAYOUT.peak_vip_slot.fields;
  if (key.length !== LAYOUT.peak_vip_key.size)
    throw new RangeError(`key: ${key.length} bytes, not a VIP key`);
  if (value.length !== LAYOUT.peak_vip_value.size)
    throw new RangeError(`value: ${value.length} bytes, not a VIP value`);
  const b = Buffer.alloc(LAYOUT.peak_vip_slot.size);
  key.copy(b, f.key);
  value.copy(b, f.value);
  return b;
}

/** Entry 0 of a VIP index. */
export function encodeVipIndexHead(h: { seed: number; useHash: boolean; keys: number }): Buffer {
  const f = LAYOUT.peak_vip_index_head.fields;
  const b = Buffer.alloc(LAYOUT.peak_vip_index_head.size);
  b.writeUInt32LE(checkUint('seed', h.seed, 0xffffffff), f.seed);
  b.writeUInt32LE(h.useHash ? ENUMS.peak_vip_index_flag.PEAK_VIP_INDEX_F_USE_HASH : 0, f.flags);
  b.writeUInt32LE(checkUint('keys', h.keys, 0xffffffff), f.keys);
  return b;
}

/** Parses "aa:bb:cc:dd:ee:ff" (or with dashes); `field` names it in the error. */
export function encodeMac(field: string, text: unknown): Buffer {
  if (typeof text !== 'string' || !/^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$/.test(text))
    throw new TypeError(`${field}: ${JSON.stringify(text)} is not a MAC address like 02:00:00:00:00:01`);
  return Buffer.from(text.replace(/[:-]/g, ''), 'hex');
}

export function decodeMac(b: Buffer): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}

export interface ConfigFields {
  ownMac: string;
  nextHopMac: string;
  encapSourceV4: { prefix: string; prefixLength: number } | null;
  encapSourceV6: { prefix: string; prefixLength: number } | null;
  mtu: number;
  fibRedirect: boolean;
  /** Idle timeouts of connection-table entries in seconds (0 = never). */
  conntrackTimeouts: { tcp: number; udp: number };
  /** GUE UDP destination port (1..65535); absent = DEFAULT_GUE_PORT. */
  guePort?: number;
}

export function encodeConfig(c: ConfigFields): Buffer {
  const f = LAYOUT.peak_config.fields;
  const b = Buffer.alloc(LAYOUT.peak_config.size);
  encodeMac('ownMac', c.ownMac).copy(b, f.own_mac);
  encodeMac('nextHopMac', c.nextHopMac).copy(b, f.next_hop_mac);
  if (c.encapSourceV4) {
    const a = encodeAddr('encapSourceV4.prefix', c.encapSourceV4.prefix);
    if (a.family !== 4)
      throw new TypeError(`encapSourceV4.prefix: ${c.encapSourceV4.prefix} is not an IPv4 address`);
    a.bytes.copy(b, f.src_v4, 0, 4);
    b[f.src_v4_len] = prefixLength('encapSourceV4.prefixLength', c.encapSourceV4.prefixLength, 32);
  }
  if (c.encapSourceV6) {
    const a = encodeAddr('encapSourceV6.prefix', c.encapSourceV6.prefix);
    if (a.family !== 6)
      throw new TypeError(`encapSourceV6.prefix: ${c.encapSourceV6.prefix} is not an IPv6 address`);
    a.bytes.copy(b, f.src_v6);
    b[f.src_v6_len] = prefixLength('encapSourceV6.prefixLength', c.encapSourceV6.prefixLength, 128);
  }
  const mtu = checkUint('mtu', c.mtu, 65535);
  if (mtu < 68) throw new RangeError(`mtu: ${mtu} is not between 68 and 65535`);
  b.writeUInt16LE(mtu, f.mtu);
  const flags =
    ENUMS.peak_config_flag.PEAK_CFG_F_READY | (c.fibRedirect ? ENUMS.peak_config_flag.PEAK_CFG_F_FIB : 0);
  b.writeUInt32LE(flags, f.flags);
  const t = c.conntrackTimeouts;
  const max = sharedContract().ctMaxTimeout;
  b.writeUInt32LE(checkUint('conntrackTimeouts.tcp', t.tcp, max), f.ct_timeout_tcp);
  b.writeUInt32LE(checkUint('conntrackTimeouts.udp', t.udp, max), f.ct_timeout_udp);
  const port = checkUint('guePort', c.guePort ?? DEFAULT_GUE_PORT, 65535);
  if (port === 0) throw new RangeError('guePort: 0 is not a port in 1..65535');
  b.writeUInt16BE(port, f.gue_port);
  return b;
}

/** A prefix length of 1..max (0 would mean "no source" to the datapath). */
function prefixLength(field: string, v: unknown, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max)
    throw new RangeError(`${field}: ${JSON.stringify(v)} is not an integer in 1..${max}`);
  return v;
}

/** null when the config entry was never written (READY clear). */
export function decodeConfig(b: Buffer): ConfigFields | null {
  const f = LAYOUT.peak_config.fields;
  const flags = b.readUInt32LE(f.flags);
  if (!(flags & ENUMS.peak_config_flag.PEAK_CFG_F_READY)) return null;
  const v4len = b[f.src_v4_len]!;
  const v6len = b[f.src_v6_len]!;
  return {
    ownMac: decodeMac(b.subarray(f.own_mac, f.own_mac + 6)),
    nextHopMac: decodeMac(b.subarray(f.next_hop_mac, f.next_hop_mac + 6)),
    encapSourceV4: v4len
      ? { prefix: formatIp(b.subarray(f.src_v4, f.src_v4 + 4)), prefixLength: v4len }
      : null,
    encapSourceV6: v6len
      ? { prefix: formatIp(b.subarray(f.src_v6, f.src_v6 + 16)), prefixLength: v6len }
      : null,
    mtu: b.readUInt16LE(f.mtu),
    fibRedirect: (flags & ENUMS.peak_config_flag.PEAK_CFG_F_FIB) !== 0,
    conntrackTimeouts: { tcp: b.readUInt32LE(f.ct_timeout_tcp), udp: b.readUInt32LE(f.ct_timeout_udp) },
    guePort: b.readUInt16BE(f.gue_port) || DEFAULT_GUE_PORT,
  };
}

/** Sums a per-CPU {packets, bytes} value. */
export function sumTraffic(perCpu: Buffer[]): { packets: bigint; bytes: bigint } {
  let packets = 0n;
  let bytes = 0n;
  for (const b of perCpu) {
    packets += b.readBigUInt64LE(LAYOUT.peak_traffic.fields.packets);
    bytes += b.readBigUInt64LE(LAYOUT.peak_traffic.fields.bytes);
  }
  return { packets, bytes };
}

/**
 * A current table's entries as the datapath stores them: each slot whose owner differs in `previous` (or every
 * slot, when the sizes differ) carries PEAK_SLOT_F_MOVED, so only those read the previous table. `previous`
 * null: the table itself. Ids must be below the flag (installTables checks).
 */
export function markMovedSlots(table: Uint32Array, previous: Uint32Array | null): Uint32Array {
  if (previous === null) return table;
  const flag = (1 << sharedContract().slotMovedBit) >>> 0;
  const same = previous.length === table.length;
  const out = new Uint32Array(table.length);
  for (let s = 0; s < table.length; s++)
    out[s] = same && previous[s] === table[s] ? table[s]! : (table[s]! | flag) >>> 0;
  return out;
}

/** A stored table entry without PEAK_SLOT_F_MOVED: the backend id. */
export function slotBackendId(entry: number): number {
  return (entry & ~(1 << sharedContract().slotMovedBit)) >>> 0;
}

/** A Maglev inner map's contents as u32 words (BpfMap.readU32s / writeU32s): [0] = M, [1 + slot] = backend id. */
export function encodeTableEntries(table: Uint32Array): Uint32Array {
  const out = new Uint32Array(table.length + 1);
  out[0] = table.length;
  out.set(table, 1);
  return out;
}
