// Counting the entries of the connection table (an LRU hash: the kernel keeps no count we can read) by a
// batched walk of the map, a turn of the event loop between batches so a million entries do not stall it.
import type { BpfMap } from '../datapath/bpf';
import { KernelDatapath } from '../datapath/kernel';
import { native } from '../datapath/native';
import type { Datapath } from '../datapath/types';

/** The connection table as the metrics see it. */
export interface ConntrackTable {
  maxEntries: number;
  countEntries(): Promise<number>;
}

/** Entries per batch: 16 Ki x ~60 bytes is ~1 MB copied per syscall, a few ms. */
const BATCH = 16384;

export async function countMapEntries(map: Pick<BpfMap, 'fd' | 'keySize' | 'valueBytes'>): Promise<number> {
  let token: Buffer | null = null;
  let n = 0;
  for (;;) {
    const r = native().mapLookupBatch(map.fd, token, BATCH, map.keySize, map.valueBytes, false);
    n += r.count;
    if (r.done) return n;
    token = r.next;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

export function bpfConntrackTable(map: BpfMap): ConntrackTable {
  return { maxEntries: map.maxEntries, countEntries: () => countMapEntries(map) };
}

/** The connection table of a kernel datapath; null for others (the in-memory one of unit tests). */
export function conntrackTableOf(dp: Datapath): ConntrackTable | null {
  return dp instanceof KernelDatapath ? bpfConntrackTable(dp.maps.conntrack) : null;
}
