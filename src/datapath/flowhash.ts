// TS twin of bpf/hash.h and bpf/select.h (conntrack, then Maglev probing): the backend the datapath picks.
// Hash: murmur3_32-style mix over big-endian 32-bit words of header fields, seeded with PEAK_HASH_SEED.
// Seeds and bounds come from the compiled object (contract.ts); selectBackend is the one TS model of the
// choice, used by the predictor (tests against the kernel) and by MemoryDatapath.
import { encodeAddr } from './layout';
import { sharedContract } from './contract';
import { murmur3Block, murmur3Final } from '../maglev/hash';
import { probeForward } from '../maglev/maglev';

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
  let h = sharedContract().hashSeed;
  for (const w of s.words) h = murmur3Block(h, w);
  for (const w of d.words) h = murmur3Block(h, w);
  h = murmur3Block(h, (((f.sourcePort & 0xffff) << 16) | (f.destinationPort & 0xffff)) >>> 0);
  h = murmur3Block(h, f.proto & 0xff);
  return murmur3Final(h, s.family === 4 ? 16 : 40);
}

/** The source-only hash of client-persistent VIPs (bpf peak_source_hash). */
export function sourceHash(source: string): number {
  const s = addrWords('source', source);
  let h = sharedContract().hashSeed;
  for (const w of s.words) h = murmur3Block(h, w);
  return murmur3Final(h, s.family === 4 ? 4 : 16);
}

/** A VIP's Maglev table as selection reads it: backend id per slot, or its size and a reader of slots. */
export type TableView = Uint32Array | { size: number; entry: (slot: number) => number };

function viewOf(t: TableView): { size: number; entry: (slot: number) => number } {
  return t instanceof Uint32Array ? { size: t.length, entry: (s) => t[s]! } : t;
}

export interface PredictOptions {
  /** The VIP's table: backend id per slot. */
  table: TableView;
  /** True when the backend id may take new flows (exists, state up). */
  usable: (backendId: number) => boolean;
  hash: number;
}

/** The backend id a new flow gets (slot = hash % M, then up to PEAK_MAX_PROBES forward), or null (dropped). */
export function predictBackend(o: PredictOptions): number | null {
  return probeForward({
    ...viewOf(o.table),
    start: o.hash,
    probes: sharedContract().maxProbes,
    usable: o.usable,
  });
}

/** Global counters peak_select() and its caller's drop reasons bump, by enum peak_counter name. */
export type SelectCounter =
  | 'ct_hit'
  | 'ct_miss'
  | 'ct_expired'
  | 'ct_reselect'
  | 'ct_insert'
  | 'drop_no_table'
  | 'drop_no_backend'
  | 'hint_sent'
  | 'hint_skipped_owner'
  | 'ct_closed'
  | 'ct_closed_other';

/**
 * bpf peak_ct_tail: whether TCP sequence number `seq` belongs to the tail of a connection whose FIN or RST carried
 * `end` (a closed connection-table entry serves only that): from PEAK_CT_CLOSED_BEHIND before `end` to
 * PEAK_CT_CLOSED_AHEAD after it, modulo 2^32. Another sequence number is a new connection on the same 5-tuple.
 */
export function ctTail(end: number, seq: number): boolean {
  const c = sharedContract();
  return (seq - end + c.ctClosedBehind) >>> 0 <= c.ctClosedBehind + c.ctClosedAhead;
}

/** A connection-table entry as the datapath reads it. */
export interface ConntrackRead {
  backendId: number;
  vipId: number;
  /** Idle past its protocol's timeout: not honoured, counted as ct_expired. */
  expired?: boolean;
  /** The sequence number of the FIN or RST that ended the connection (a closed entry); null/absent: open. */
  closedSeq?: number | null;
}

/** What the packet's TCP header says for a closed entry: its sequence number, and whether it is a FIN or RST. */
export interface SelectSegment {
  seq: number;
  /** A FIN or RST: the entry it hits or writes is marked closed at `seq`. */
  end: boolean;
}

export interface SelectInput {
  /** The VIP the packet matched. */
  vipId: number;
  /** The VIP's table; null when none is installed. */
  table: TableView | null;
  /** The flow hash of the VIP's kind (flowHash, or sourceHash for client persistence). */
  hash: number;
  /** True when the backend id may take new flows (exists, state up). */
  usable: (backendId: number) => boolean;
  /** True when the backend may keep established flows (exists, state up or draining). */
  keepsFlows: (backendId: number) => boolean;
  /** The connection table is read: not for a TCP SYN, nor for a no-conntrack VIP. */
  readConntrack: boolean;
  /** A new choice is written to the connection table: not for a no-conntrack VIP, nor for an ICMP error. */
  recordConntrack: boolean;
  /** The flow's entry (null: none). Looked at only when readConntrack. */
  conntrack: ConntrackRead | null;
  /** A TCP segment of the flow itself (bpf PEAK_SEQ_CHECK / PEAK_SEQ_END); null/absent: nothing to judge a
   * closed entry by (UDP, an ICMP error, a lookup without a sequence number): a closed entry serves it. */
  segment?: SelectSegment | null;
  /** The packet may carry a previous-owner hint: a non-SYN TCP packet of the flow itself, or an ICMP error about a
   * TCP flow (bpf/balancer.bpf.c peak_forward). */
  wantHint?: boolean;
  /** True when the backend id is set and reached with GUE (only GUE choices carry hints, only GUE backends
   * are hinted). Absent: no backend is GUE. */
  gue?: (backendId: number) => boolean;
  /** The backend's address family (4 or 6; 0 unset): a hint must be of the chosen backend's. Absent: one family. */
  family?: (backendId: number) => number;
  /** The VIP's previous table (maglev_prev_tables), null/absent when none. */
  previousTable?: TableView | null;
}

/** The previous-owner hint a GUE packet carries (bpf peak_pick_hint). */
export interface SelectHint {
  backendId: number;
  /** skipped: the slot's owner the choice passed over (draining); otherwise the slot's owner in the previous
   * table. */
  skipped: boolean;
}

export interface Selection {
  /** The backend id, or null (dropped: no usable backend within PEAK_MAX_PROBES, or no table). */
  backendId: number | null;
  /** conntrack: the entry's backend kept the flow; maglev: a new choice (miss, or the entry re-selected). */
  from: 'conntrack' | 'maglev';
  /** An entry existed but was not honoured (another VIP's, or its backend may not keep flows). */
  reselected: boolean;
}

export interface SelectResult extends Selection {
  /** Why nothing was picked; null when a backend was. */
  drop: 'no-table' | 'no-backend' | null;
  /** True when the choice is written to the connection table (for this VIP, with this backend). */
  recorded: boolean;
  /** The sequence number the entry is marked closed at by this packet (a FIN or RST hitting an open entry, or
   * written with the choice); null: no mark made. */
  closes: number | null;
  /** The global counters bumped, in the datapath's order. */
  counters: SelectCounter[];
  /** The hint the packet carries, or null. */
  hint: SelectHint | null;
}

/** bpf peak_pick_hint: the previous table's owner of the slot when it differs from the current owner (any
 * state), else the current owner probing skipped while it is draining (never down); never the chosen backend
 * itself, only GUE backends of the chosen backend's family. */
function pickHint(o: SelectInput, owner: number, chosen: number): SelectHint | null {
  const gue = o.gue ?? ((): boolean => false);
  const family = o.family ?? ((): number => 0);
  const ok = (id: number): boolean => id !== 0 && id !== chosen && gue(id) && family(id) === family(chosen);
  const prevView = o.previousTable == null ? null : viewOf(o.previousTable);
  const prev = prevView === null || prevView.size === 0 ? 0 : prevView.entry(o.hash % prevView.size);
  if (prev !== owner && ok(prev)) return { backendId: prev, skipped: false };
  if (ok(owner) && o.keepsFlows(owner) && !o.usable(owner)) return { backendId: owner, skipped: true };
  return null;
}

/**
 * The choice for a VIP packet, as bpf peak_select and peak_forward make it: a fresh entry of this VIP whose
 * backend keeps flows wins; else probe the table from the hash's slot, and record the choice.
 */
export function selectBackend(o: SelectInput): SelectResult {
  const counters: SelectCounter[] = [];
  let reselected = false;
  let reselectedId: number | null = null; // this VIP's entry whose backend may not keep the flow
  const seg = o.segment ?? null;
  if (o.readConntrack) {
    const ct = o.conntrack;
    const closed = ct !== null && ct.closedSeq !== undefined && ct.closedSeq !== null;
    if (ct === null) counters.push('ct_miss');
    else if (ct.expired === true) counters.push('ct_expired');
    else if (closed && ct.vipId === o.vipId && seg !== null && !ctTail(ct.closedSeq!, seg.seq))
      counters.push('ct_closed_other');
    else if (ct.vipId === o.vipId && o.keepsFlows(ct.backendId)) {
      counters.push('ct_hit');
      const closes = !closed && seg !== null && seg.end ? seg.seq : null;
      if (closes !== null) counters.push('ct_closed');
      return {
        backendId: ct.backendId,
        from: 'conntrack',
        reselected,
        drop: null,
        recorded: false,
        closes,
        counters,
        hint: null,
      };
    } else {
      if (ct.vipId === o.vipId) reselectedId = ct.backendId;
      counters.push('ct_reselect');
      reselected = true;
    }
  }
  const t = o.table === null ? null : viewOf(o.table);
  if (t === null || t.size === 0) {
    counters.push('drop_no_table');
    return {
      backendId: null,
      from: 'maglev',
      reselected,
      drop: 'no-table',
      recorded: false,
      closes: null,
      counters,
      hint: null,
    };
  }
  const backendId = probeForward({
    ...t,
    start: o.hash,
    probes: sharedContract().maxProbes,
    usable: o.usable,
  });
  if (backendId === null) {
    counters.push('drop_no_backend');
    return {
      backendId,
      from: 'maglev',
      reselected,
      drop: 'no-backend',
      recorded: false,
      closes: null,
      counters,
      hint: null,
    };
  }
  const gue = o.gue ?? ((): boolean => false);
  const hint =
    o.wantHint === true && gue(backendId) ? pickHint(o, t.entry(o.hash % t.size), backendId) : null;
  // A hinted miss is not recorded (the next packet must carry the hint again); a reselected entry is rewritten
  // unless the hint names its own backend (then it is kept, and refreshed).
  const recorded =
    o.recordConntrack && (hint === null || (reselectedId !== null && hint.backendId !== reselectedId));
  const closes = recorded && seg !== null && seg.end ? seg.seq : null;
  if (closes !== null) counters.push('ct_closed');
  if (recorded) counters.push('ct_insert');
  if (hint !== null) {
    counters.push('hint_sent');
    if (hint.skipped) counters.push('hint_skipped_owner');
  }
  return { backendId, from: 'maglev', reselected, drop: null, recorded, closes, counters, hint };
}

export interface SelectOptions extends PredictOptions {
  /** The VIP the packet matched. */
  vipId: number;
  /** The flow's connection-table entry if it is fresh; null for a miss, a SYN or a no-conntrack VIP. */
  conntrack: { backendId: number; vipId: number } | null;
  /** True when the backend may keep established flows (exists, state up or draining). */
  keepsFlows: (backendId: number) => boolean;
}

/** The backend a VIP packet goes to (selectBackend for a packet whose entry, if any, was read). */
export function predictSelect(o: SelectOptions): Selection {
  const r = selectBackend({ ...o, readConntrack: true, recordConntrack: true });
  return { backendId: r.backendId, from: r.from, reselected: r.reselected };
}

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
  /** Default PEAK_VIP_INDEX_SLOTS; a power of two. */
  slots?: number;
  /** Default PEAK_VIP_INDEX_PROBES. */
  probes?: number;
  /** Default VIP_INDEX_SEED_TRIES. */
  seedTries?: number;
  /** Hash under test (default vipIndexHash). */
  hash?: (k: VipIndexKey, seed: number) => number;
}

/** The i-th seed tried: PEAK_HASH_SEED first, then a fixed sequence (every node builds the same index). */
export function vipIndexSeed(i: number): number {
  const seed = sharedContract().hashSeed;
  return i === 0 ? seed : murmur3Final(murmur3Block(seed, i), 4);
}

/** Places every key within `probes` slots of its home slot (linear probing), retrying seeds; else useHash. */
export function planVipIndex(o: VipIndexOptions): VipIndexPlan {
  const slots = o.slots ?? sharedContract().vipIndexSlots;
  const probes = o.probes ?? sharedContract().vipIndexProbes;
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
