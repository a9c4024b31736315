// Shared balancer test set-up: a loaded KernelDatapath with a known config, VIPs, backends and tables, plus
// builders of the exact frames the balancer must emit (predicted with the TS hash twin).
import { flowHash, predictBackend, sourceHash } from '../../src/datapath/flowhash';
import { KernelDatapath } from '../../src/datapath/kernel';
import { encodeAddr, GUE } from '../../src/datapath/layout';
import type { BackendSpec, VipSpec } from '../../src/datapath/types';
import { ethHeader, EthSpec, gueHeader, ipPacket, l3Offset, PROTO } from '../helpers/packet';

export const LB_MAC = '02:00:00:00:01:01';
export const ROUTER_MAC = '02:00:00:00:01:fe';
export const CLIENT_MAC = '02:00:00:00:02:02';
export const SRC_V4 = { prefix: '10.255.0.0', prefixLength: 16 };
export const SRC_V6 = { prefix: 'fd00:ff::', prefixLength: 64 };
export const MTU = 1500;

export const BACKENDS: BackendSpec[] = [
  { id: 1, address: '10.1.0.1', state: 'up' },
  { id: 2, address: '10.1.0.2', state: 'up' },
  { id: 3, address: '10.1.0.3', state: 'up' },
  { id: 11, address: 'fd00:1::1', state: 'up' },
  { id: 12, address: 'fd00:1::2', state: 'up' },
  { id: 13, address: 'fd00:1::3', state: 'up' },
  { id: 21, address: 'fd00:2::1', state: 'up' },
];

const flags = (o: Partial<VipSpec['flags']> = {}) => ({ sourceHash: false, noConntrack: false, ...o });
export const VIPS: { spec: VipSpec; members: number[] }[] = [
  { spec: { key: { address: '10.0.0.10', port: 80, protocol: 'tcp' }, id: 1, flags: flags(), tableSize: 251 }, members: [1, 2, 3] },
  { spec: { key: { address: '10.0.0.10', port: 0, protocol: 'udp' }, id: 2, flags: flags(), tableSize: 251 }, members: [1, 2, 3] },
  { spec: { key: { address: '2001:db8::10', port: 443, protocol: 'tcp' }, id: 3, flags: flags(), tableSize: 251 }, members: [11, 12, 13] },
  { spec: { key: { address: '10.0.0.20', port: 80, protocol: 'tcp' }, id: 4, flags: flags(), tableSize: 13 }, members: [21] },
  { spec: { key: { address: '10.0.0.30', port: 80, protocol: 'tcp' }, id: 5, flags: flags({ sourceHash: true }), tableSize: 251 }, members: [1, 2, 3] },
  { spec: { key: { address: '10.0.0.40', port: 53, protocol: 'udp' }, id: 6, flags: flags({ noConntrack: true }), tableSize: 251 }, members: [1, 2, 3] },
];

/** A deterministic table: slot s -> members[(s * 7 + vipId) % n]. */
export function simpleTable(size: number, members: number[], vipId: number): Uint32Array {
  const t = new Uint32Array(size);
  for (let s = 0; s < size; s++) t[s] = members[(s * 7 + vipId) % members.length]!;
  return t;
}

export interface Lb {
  dp: KernelDatapath;
  tables: Map<number, Uint32Array>;
  states: Map<number, BackendSpec>;
}

/** `objectPath`: another build of the balancer (a test fixture with a mocked helper); default the real one. */
export async function setupLb(o: { objectPath?: string } = {}): Promise<Lb> {
  const dp = await KernelDatapath.load({ objectPath: o.objectPath, maxEntries: { conntrack: 65536 } });
  await dp.configure({
    ownMac: LB_MAC,
    nextHopMac: ROUTER_MAC,
    encapSourceV4: SRC_V4,
    encapSourceV6: SRC_V6,
    mtu: MTU,
  });
  const states = new Map<number, BackendSpec>();
  for (const b of BACKENDS) {
    await dp.upsertBackend(b);
    states.set(b.id, { ...b });
  }
  const tables = new Map<number, Uint32Array>();
  for (const v of VIPS) {
    await dp.upsertVip(v.spec);
    const t = simpleTable(v.spec.tableSize, v.members, v.spec.id);
    await dp.installTable(v.spec.id, t);
    tables.set(v.spec.id, t);
  }
  return { dp, tables, states };
}

export async function setBackendState(lb: Lb, id: number, state: BackendSpec['state']): Promise<void> {
  const b = lb.states.get(id)!;
  b.state = state;
  await lb.dp.upsertBackend(b);
}

export interface FlowDesc {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  proto: number;
}

/** The backend a new flow gets, as the TS twin predicts it (null = dropped). */
export function predict(lb: Lb, vipId: number, f: FlowDesc): { id: number | null; hash: number } {
  const vip = [...VIPS, ...GUE_VIPS].find((v) => v.spec.id === vipId)!;
  const hash = vip.spec.flags.sourceHash
    ? sourceHash(f.src)
    : flowHash({ source: f.src, destination: f.dst, sourcePort: f.sport, destinationPort: f.dport, proto: f.proto });
  const id = predictBackend({
    table: lb.tables.get(vipId)!,
    hash,
    usable: (i) => lb.states.get(i)?.state === 'up',
  });
  return { id, hash };
}

/** Outer source the datapath derives: prefix with host bits (low 32 bits at most) from the hash. */
export function outerSource(family: 4 | 6, hash: number): string {
  const p = family === 4 ? SRC_V4 : SRC_V6;
  const a = encodeAddr('prefix', p.prefix).bytes;
  const width = family === 4 ? 32 : 128;
  const hostBits = Math.min(width - p.prefixLength, 32);
  const host = hostBits === 32 ? 0xffffffff : (1 << hostBits) - 1;
  const at = family === 4 ? 0 : 12;
  const low = a.readUInt32BE(at);
  a.writeUInt32BE(((low & ~host) | (hash & host)) >>> 0, at);
  return family === 4 ? `${a[0]}.${a[1]}.${a[2]}.${a[3]}` : formatV6(a);
}

function formatV6(b: Buffer): string {
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(b.readUInt16BE(i).toString(16));
  return g.join(':');
}

/** The exact frame the balancer sends for `input` to backend `beAddr`. */
export function expectedEncap(input: Buffer, beAddr: string, hash: number, vlans: EthSpec['vlans'] = []): Buffer {
  const l3 = l3Offset(input);
  const v4in = input[l3]! >> 4 === 4;
  const ipLen = v4in ? input.readUInt16BE(l3 + 2) : 40 + input.readUInt16BE(l3 + 4);
  const inner = input.subarray(l3, l3 + ipLen);
  const tos = v4in ? input[l3 + 1]! : (input.readUInt32BE(l3) >>> 20) & 0xff;
  const beFamily = encodeAddr('backend', beAddr).family;
  const outer = ipPacket(
    {
      src: outerSource(beFamily, hash),
      dst: beAddr,
      tos,
      ttl: 64,
      id: 0,
      df: true,
      flowLabel: hash & 0xfffff,
    },
    { type: 'raw', proto: v4in ? PROTO.IPIP : PROTO.IPV6, payload: inner },
  );
  const eth = ethHeader({ dst: ROUTER_MAC, src: LB_MAC, vlans }, beFamily === 4 ? 0x0800 : 0x86dd);
  return Buffer.concat([eth, outer]);
}

export function backendAddr(id: number): string {
  return BACKENDS.find((b) => b.id === id)!.address;
}

/** GUE backends (ids 31.., 41..) and VIPs (ids 20..) added by addGue on top of setupLb's. */
export const GUE_BACKENDS: BackendSpec[] = [
  { id: 31, address: '10.3.0.1', state: 'up', encap: 'gue' },
  { id: 32, address: '10.3.0.2', state: 'up', encap: 'gue' },
  { id: 33, address: '10.3.0.3', state: 'up', encap: 'gue' },
  { id: 41, address: 'fd00:3::1', state: 'up', encap: 'gue' },
  { id: 42, address: 'fd00:3::2', state: 'up', encap: 'gue' },
  { id: 43, address: 'fd00:3::3', state: 'up', encap: 'gue' },
  { id: 35, address: '10.3.0.5', state: 'up' }, // IPIP, in a GUE VIP's table (mixed VIP)
];

export const GUE_VIPS: { spec: VipSpec; members: number[] }[] = [
  { spec: { key: { address: '10.0.1.10', port: 80, protocol: 'tcp' }, id: 20, flags: flags(), tableSize: 251 }, members: [31, 32, 33] },
  { spec: { key: { address: '10.0.1.11', port: 80, protocol: 'tcp' }, id: 21, flags: flags({ stateless: true }), tableSize: 251 }, members: [31, 32, 33] },
  { spec: { key: { address: '2001:db8::1:12', port: 443, protocol: 'tcp' }, id: 22, flags: flags({ stateless: true }), tableSize: 251 }, members: [41, 42, 43] },
  { spec: { key: { address: '2001:db8::1:13', port: 443, protocol: 'tcp' }, id: 23, flags: flags({ stateless: true }), tableSize: 13 }, members: [31, 32] },
  { spec: { key: { address: '10.0.1.14', port: 80, protocol: 'tcp' }, id: 24, flags: flags({ stateless: true }), tableSize: 13 }, members: [41, 42] },
  { spec: { key: { address: '10.0.1.15', port: 0, protocol: 'udp' }, id: 25, flags: flags({ stateless: true }), tableSize: 251 }, members: [31, 32, 33] },
  { spec: { key: { address: '10.0.1.16', port: 80, protocol: 'tcp' }, id: 26, flags: flags(), tableSize: 251 }, members: [31, 32, 35] },
];

/** Adds the GUE backends and VIPs (tables as simpleTable) to a set-up balancer. */
export async function addGue(lb: Lb): Promise<void> {
  for (const b of GUE_BACKENDS) {
    await lb.dp.upsertBackend(b);
    lb.states.set(b.id, { ...b });
  }
  for (const v of GUE_VIPS) {
    await lb.dp.upsertVip(v.spec);
    const t = simpleTable(v.spec.tableSize, v.members, v.spec.id);
    await lb.dp.installTable(v.spec.id, t);
    lb.tables.set(v.spec.id, t);
  }
}

export function anyBackendAddr(id: number): string {
  return [...BACKENDS, ...GUE_BACKENDS].find((b) => b.id === id)!.address;
}

/** The exact GUE frame the balancer sends for `input` to `beAddr` (UDP checksum 0, optional hint). */
export function expectedGue(
  input: Buffer,
  beAddr: string,
  hash: number,
  o: { hint?: string | null; port?: number; vlans?: EthSpec['vlans'] } = {},
): Buffer {
  const l3 = l3Offset(input);
  const v4in = input[l3]! >> 4 === 4;
  const ipLen = v4in ? input.readUInt16BE(l3 + 2) : 40 + input.readUInt16BE(l3 + 4);
  const inner = input.subarray(l3, l3 + ipLen);
  const tos = v4in ? input[l3 + 1]! : (input.readUInt32BE(l3) >>> 20) & 0xff;
  const beFamily = encodeAddr('backend', beAddr).family;
  const outer = ipPacket(
    { src: outerSource(beFamily, hash), dst: beAddr, tos, ttl: 64, id: 0, df: true, flowLabel: hash & 0xfffff },
    {
      type: 'udp',
      sport: GUE.sourcePort(hash),
      dport: o.port ?? 6080,
      payload: Buffer.concat([gueHeader(inner, o.hint ?? null), inner]),
      noChecksum: true,
    },
  );
  const eth = ethHeader({ dst: ROUTER_MAC, src: LB_MAC, vlans: o.vlans ?? [] }, beFamily === 4 ? 0x0800 : 0x86dd);
  return Buffer.concat([eth, outer]);
}
