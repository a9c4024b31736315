// TS twin of bpf/hash.h and the Maglev probing of bpf/select.h: predicts which backend the datapath picks.
// Hash: murmur3_32-style mix over big-endian 32-bit words of header fields, fixed seed (PEAK_HASH_SEED).
import { encodeAddr } from './layout';

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

const rotl = (x: number, r: number): number => ((x << r) | (x >>> (32 - r))) >>> 0;

function mix(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = rotl(k, 15);
  k = Math.imul(k, 0x1b873593);
  h = (h ^ k) >>> 0;
  h = rotl(h, 13);
  return (Math.imul(h, 5) + 0xe6546b64) >>> 0;
}

function fmix(h: number, len: number): number {
  h = (h ^ len) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
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
  for (const w of s.words) h = mix(h, w);
  for (const w of d.words) h = mix(h, w);
  h = mix(h, (((f.sourcePort & 0xffff) << 16) | (f.destinationPort & 0xffff)) >>> 0);
  h = mix(h, f.proto & 0xff);
  return fmix(h, s.family === 4 ? 16 : 40);
}

/** The source-only hash of client-persistent VIPs (bpf peak_source_hash). */
export function sourceHash(source: string): number {
  const s = addrWords('source', source);
  let h = HASH_SEED;
  for (const w of s.words) h = mix(h, w);
  return fmix(h, s.family === 4 ? 4 : 16);
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
