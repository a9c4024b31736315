// Katran side by side (bench:datapath --katran-object PATH): a Katran balancer object built elsewhere (its
// balancer.bpf.c; nothing of Katran is in this repository) is loaded and programmed the way the bench programs
// ours (one IPv4 TCP VIP, eight reals, a 65,537-slot ring, a per-CPU LRU of 1M flows for every CPU), so its
// established and new-flow (SYN) paths are timed in the same runs as ours. Only Katran's map interface is known
// here: vip_map (struct vip_definition -> struct vip_meta), reals (u32 -> struct real_definition), ch_rings (u32 ->
// u32, vip_num * RING_SIZE + slot), ctl_array[0] (the next hop's MAC), lru_mapping (CPU -> LRU of struct flow_key ->
// struct real_pos_lru) and stats (per-CPU struct lb_stats {u64 v1, v2}, global counters from MAX_VIPS on).
import { BpfMap, BpfObject, BpfProgram, MapType, possibleCpus } from '../../../src/datapath/bpf';

/** struct flow_key: src and dst (16 bytes each, IPv4 in the first word), ports, proto; padded to 4. */
const FLOW_KEY_BYTES = 40;
/** struct real_pos_lru: u32 pos, u64 atime. */
const REAL_POS_LRU_BYTES = 16;
/** Katran's global counters (balancer_consts.h), as offsets from MAX_VIPS in `stats`. */
const LRU_CNTRS = 0;
const LRU_MISS_CNTR = 1;
const NEW_CONN_RATE_CNTR = 2;
const FALLBACK_LRU_CNTR = 3;
/** MAX_CONN_RATE: past this many LRU misses in a second on a CPU Katran stops inserting (its flood guard). */
export const KATRAN_MAX_CONN_RATE = 125_000;

export interface KatranSetup {
  /** The VIP (IPv4, TCP) and its reals, in the bench's terms. */
  vip: number[];
  port: number;
  reals: number[][];
  nextHopMac: Buffer;
  /** Per-CPU LRU entries (Katran's default splits its LRU size over the CPUs). */
  lruEntries: number;
}

/** Katran's global counters (summed over CPUs) that tell which path a row took. */
export interface KatranCounters {
  /** LRU_CNTRS v1: packets to a VIP that went through selection. */
  packets: bigint;
  /** LRU_MISS_CNTR v1 / v2: TCP SYNs (always a miss: no lookup) / other TCP packets that missed the LRU. */
  synMisses: bigint;
  otherMisses: bigint;
  /** FALLBACK_LRU_CNTR v1: packets on a CPU without its own LRU. */
  fallback: bigint;
  /** NEW_CONN_RATE_CNTR v1 on this CPU's quantum (summed): LRU misses counted by the flood guard. */
  rate: bigint;
}

export interface Katran {
  program: BpfProgram;
  ringSize: number;
  maxVips: number;
  counters(): KatranCounters;
  /** Zeroes the flood guard's count (before a SYN row: a row stays under MAX_CONN_RATE, so every SYN inserts). */
  resetFloodGuard(): void;
  close(): void;
}

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

/** Loads and programs a Katran balancer object; throws naming what its maps lack. */
export async function loadKatran(path: string, s: KatranSetup): Promise<Katran> {
  const obj = await BpfObject.load(path);
  const maps: BpfMap[] = [];
  try {
    const map = (name: string): BpfMap => {
      try {
        return obj.map(name);
      } catch {
        throw new Error(`--katran-object ${path}: no map ${name} (not a Katran balancer object?)`);
      }
    };
    const program = obj.program('balancer_ingress');
    const stats = map('stats');
    const rings = map('ch_rings');
    // STATS_MAP_SIZE = MAX_VIPS * 2; CH_RINGS_SIZE = MAX_VIPS * RING_SIZE (compile-time in Katran)
    const maxVips = stats.info.maxEntries / 2;
    const ringSize = rings.info.maxEntries / maxVips;
    if (!Number.isInteger(maxVips) || !Number.isInteger(ringSize))
      throw new Error(
        `--katran-object ${path}: stats/ch_rings sizes do not fit MAX_VIPS * 2 and MAX_VIPS * RING_SIZE`,
      );
    const ctl = Buffer.alloc(map('ctl_array').info.valueSize);
    s.nextHopMac.copy(ctl, 0);
    map('ctl_array').update(u32(0), ctl);
    // struct vip_definition: 16-byte address union, be16 port, u8 proto (padded); struct vip_meta: flags, vip_num
    const vipMap = map('vip_map');
    const key = Buffer.alloc(vipMap.info.keySize);
    Buffer.from(s.vip).copy(key, 0);
    key.writeUInt16BE(s.port, 16);
    key[18] = 6;
    vipMap.update(key, Buffer.alloc(vipMap.info.valueSize)); // flags 0, vip_num 0
    const reals = map('reals');
    s.reals.forEach((addr, i) => {
      const v = Buffer.alloc(reals.info.valueSize); // struct real_definition: address union, flags 0 (IPv4)
      Buffer.from(addr).copy(v, 0);
      reals.update(u32(i + 1), v); // real ids start at 1 (0 marks an empty ring slot)
    });
    // vip_num 0: slots 0 .. RING_SIZE - 1, slot s -> real 1 + s % n (the bench's table for its VIP)
    const keys = Buffer.alloc(ringSize * 4);
    const values = Buffer.alloc(ringSize * 4);
    for (let slot = 0; slot < ringSize; slot++) {
      keys.writeUInt32LE(slot, slot * 4);
      values.writeUInt32LE(1 + (slot % s.reals.length), slot * 4);
    }
    if (rings.updateBatchPacked(keys, values, ringSize) !== ringSize)
      throw new Error(`--katran-object ${path}: the ring was not written whole`);
    const lruMapping = map('lru_mapping');
    for (let cpu = 0; cpu < possibleCpus(); cpu++) {
      const lru = BpfMap.create({
        type: MapType.LRU_HASH,
        keySize: FLOW_KEY_BYTES,
        valueSize: REAL_POS_LRU_BYTES,
        maxEntries: s.lruEntries,
        name: `katran_lru${cpu}`,
      });
      maps.push(lru);
      lruMapping.setInner(cpu, lru);
    }
    const sum = (k: number): [bigint, bigint] => {
      let v1 = 0n;
      let v2 = 0n;
      for (const c of stats.lookupPerCpu(u32(maxVips + k)) ?? []) {
        v1 += c.readBigUInt64LE(0);
        v2 += c.readBigUInt64LE(8);
      }
      return [v1, v2];
    };
    obj.close();
    return {
      program,
      ringSize,
      maxVips,
      counters: () => {
        const [synMisses, otherMisses] = sum(LRU_MISS_CNTR);
        return {
          packets: sum(LRU_CNTRS)[0],
          synMisses,
          otherMisses,
          fallback: sum(FALLBACK_LRU_CNTR)[0],
          rate: sum(NEW_CONN_RATE_CNTR)[0],
        };
      },
      resetFloodGuard: () => stats.update(u32(maxVips + NEW_CONN_RATE_CNTR), Buffer.alloc(stats.valueBytes)),
      close: () => {
        program.close();
        stats.close();
        for (const m of maps) m.close();
      },
    };
  } catch (e) {
    for (const m of maps) m.close();
    obj.close();
    throw e;
  }
}

/**
 * Why a Katran row did not take the path it names (null: it did), from its counters before and after `calls`
 * packets: 'established' = every packet an LRU hit, 'syn' = every packet a SYN that was inserted (under the flood
 * guard's rate, on the CPU's own LRU).
 */
export function katranRowProblem(
  kind: 'established' | 'syn',
  calls: number,
  before: KatranCounters,
  after: KatranCounters,
): string | null {
  const n = BigInt(calls);
  const moved = (k: keyof KatranCounters): bigint => after[k] - before[k];
  if (moved('packets') !== n) return `${moved('packets')} of ${calls} packets went through selection`;
  if (moved('fallback') !== 0n) return `${moved('fallback')} packets used the fallback LRU (no per-CPU LRU)`;
  if (kind === 'established') {
    if (moved('otherMisses') !== 0n || moved('synMisses') !== 0n)
      return `${moved('otherMisses') + moved('synMisses')} of ${calls} packets missed the LRU`;
    return null;
  }
  if (moved('synMisses') !== n) return `${moved('synMisses')} of ${calls} packets were SYN misses`;
  if (after.rate > BigInt(KATRAN_MAX_CONN_RATE))
    return `the flood guard counted ${after.rate} new flows (over ${KATRAN_MAX_CONN_RATE}: inserts skipped)`;
  return null;
}
