// TS twin of bpf/hash.h and bpf/select.h (conntrack, then Maglev probing): the backend the datapath picks.
// Hash: murmur3_32-style mix over big-endian 32-bit words of header fields, fixed seed (PEAK_HASH_SEED).
import { encodeAddr } from './layout';
import { murmur3Block, murmur3Final } from '../maglev/hash';

/** Must equal PEAK_HASH_SEED in bpf/shared.h (the cross-check test fails otherwise). */
export const HASH_SEED = 0x5ea4c0de;
/** Must equal PEAK_MAX_PROBES in bpf/shared.h. */
export const MAX_PROBES = 8;

export interface Flow {
  source: string;
  destination: string;
  sourcePort: number;
  destinationPort: number;
  /** IP protocol number. */
  proto: number;
}

function addrWords(field: string, text: string): { family: 4 | 6; words: number[] } {
  const a = encodeAddr(field, text);
  const n = a.family === 4 ? 1 : 4;
  const words: number[] = [];
  for (let i = 0; i < n; i++) words.push(a.bytes.readUInt32BE(i * 4));
  return { family: a.family, words };
}

/** The 5-tuple hash (bpf peak_flow_hash). */
export function flowHash(f: Flow): number {
  const s = addrWords('source', f.source);
  const d = addrWords('destination', f.destination);
  if (s.family !== d.family)
    throw new TypeError(`destination: ${f.destination} is not of the family of source`);
  let h = HASH_SEED;
  for (const w of s.words) h = murmur3Block(h, w);
  for (const w of d.words) h = murmur3Block(h, w);
  h = murmur3Block(h, (((f.sourcePort & 0xffff) << 16) | (f.destinationPort & 0xffff)) >>> 0);
  h = murmur3Block(h, f.proto & 0xff);
  return murmur3Final(h, s.family === 4 ? 16 : 40);
}

/** The source-only hash of client-persistent VIPs (bpf peak_source_hash). */
export function sourceHash(source: string): number {
  const s = addrWords('source', source);
  let h = HASH_SEED;
  for (const w of s.words) h = murmur3Block(h, w);
  return murmur3Final(h, s.family === 4 ? 4 : 16);
}

export interface PredictOptions {
  /** The VIP's table: backend id per slot. */
  table: Uint32Array;
  /** True when the backend id may take new flows (exists, state up). */
  usable: (backendId: number) => boolean;
  hash: number;
}

/** The backend id a new flow gets (slot = hash % M, then up to MAX_PROBES forward), or null (dropped). */
export function predictBackend(o: PredictOptions): number | null {
  const m = o.table.length;
  if (m === 0) return null;
  let slot = o.hash % m;
  for (let i = 0; i < MAX_PROBES; i++) {
    const id = o.table[slot]!;
    if (o.usable(id)) return id;
    slot = slot + 1 === m ? 0 : slot + 1;
  }
  return null;
}

export interface SelectOptions extends PredictOptions {
  /** The VIP the packet matched. */
  vipId: number;
  /** The flow's connection-table entry if it is fresh; null for a miss, a SYN or a no-conntrack VIP. */
  conntrack: { backendId: number; vipId: number } | null;
  /** True when the backend may keep established flows (exists, state up or draining). */
  keepsFlows: (backendId: number) => boolean;
}

export interface Selection {
  /** The backend id, or null (dropped: no usable backend within MAX_PROBES). */
  backendId: number | null;
  /** conntrack: the entry's backend kept the flow; maglev: a new choice (miss, or the entry re-selected). */
  from: 'conntrack' | 'maglev';
  /** An entry existed but was not honoured (another VIP's, or its backend may not keep flows). */
  reselected: boolean;
}

/** The backend a VIP packet goes to (bpf peak_select): the entry's backend while the entry is this VIP's and
 * its backend keeps flows, else predictBackend. */
export function predictSelect(o: SelectOptions): Selection {
  const ct = o.conntrack;
  if (ct !== null && ct.vipId === o.vipId && o.keepsFlows(ct.backendId))
    return { backendId: ct.backendId, from: 'conntrack', reselected: false };
  return { backendId: predictBackend(o), from: 'maglev', reselected: ct !== null };
}

/** Must equal PEAK_VIP_INDEX_SLOTS in bpf/shared.h (power of two). */
export const VIP_INDEX_SLOTS = 4096;
/** Must equal PEAK_VIP_INDEX_PROBES in bpf/shared.h. */
export const VIP_INDEX_PROBES = 8;
/** Seeds tried before the index gives up and the datapath reads the `vips` hash instead. */
export const VIP_INDEX_SEED_TRIES = 32;

/** A VIP key as the index hashes it (address text, port 0 = every port, IP protocol number). */
export interface VipIndexKey {
  address: string;
  port: number;
  proto: number;
}

/** The VIP index hash (bpf peak_vip_key_hash): address words, then port << 16 | proto << 8 | family. */
export function vipIndexHash(k: VipIndexKey, seed: number): number {
  const a = addrWords('address', k.address);
  let h = seed >>> 0;
  for (const w of a.words) h = murmur3Block(h, w);
  h = murmur3Block(h, (((k.port & 0xffff) << 16) | ((k.proto & 0xff) << 8) | a.family) >>> 0);
  return murmur3Final(h, 4 * (a.words.length + 1));
}

export interface VipIndexPlan {
  /** The seed every key was placed with (meaningless when useHash). */
  seed: number;
  /** True when the keys do not fit: the datapath must look the `vips` hash up. */
  useHash: boolean;
  /** Slot (0..slots-1, entry 1 + slot in the map) of each key, in input order; empty when useHash. */
  slotOf: number[];
}

export interface VipIndexOptions {
  keys: VipIndexKey[];
  /** Default VIP_INDEX_SLOTS; a power of two. */
  slots?: number;
  /** Default VIP_INDEX_PROBES. */
  probes?: number;
  /** Default VIP_INDEX_SEED_TRIES. */
  seedTries?: number;
  /** Hash under test (default vipIndexHash). */
  hash?: (k: VipIndexKey, seed: number) => number;
}

/** The i-th seed tried: HASH_SEED first, then a fixed sequence (every node builds the same index). */
export function vipIndexSeed(i: number): number {
  return i === 0 ? HASH_SEED : murmur3Final(murmur3Block(HASH_SEED, i), 4);
}

/** Places every key within `probes` slots of its home slot (linear probing), retrying seeds; else useHash. */
export function planVipIndex(o: VipIndexOptions): VipIndexPlan {
  const slots = o.slots ?? VIP_INDEX_SLOTS;
  const probes = o.probes ?? VIP_INDEX_PROBES;
  const tries = o.seedTries ?? VIP_INDEX_SEED_TRIES;
  const hash = o.hash ?? vipIndexHash;
  if (!Number.isInteger(slots) || slots < 1 || (slots & (slots - 1)) !== 0)
    throw new RangeError(`slots: ${slots} is not a power of two`);
  if (!Number.isInteger(probes) || probes < 1)
    throw new RangeError(`probes: ${probes} is not a positive integer`);
  const seen = new Set<string>();
  for (const k of o.keys) {
    const id = `${k.address}|${k.port}|${k.proto}`;
    if (seen.has(id))
      throw new RangeError(`keys: ${k.address} port ${k.port} proto ${k.proto} appears twice`);
    seen.add(id);
  }
  if (o.keys.length > slots / 2) return { seed: 0, useHash: true, slotOf: [] };
  for (let t = 0; t < tries; t++) {
    const seed = vipIndexSeed(t);
    const used = new Uint8Array(slots);
    const slotOf: number[] = [];
    let fits = true;
    for (const k of o.keys) {
      const home = hash(k, seed) & (slots - 1);
      let placed = -1;
      for (let i = 0; i < probes && placed < 0; i++) {
        const s = (home + i) & (slots - 1);
        if (!used[s]) placed = s;
      }
      if (placed < 0) {
        fits = false;
        break;
      }
      used[placed] = 1;
      slotOf.push(placed);
    }
    if (fits) return { seed, useHash: false, slotOf };
  }
  return { seed: 0, useHash: true, slotOf: [] };
}
