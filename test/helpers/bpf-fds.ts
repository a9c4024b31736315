// BPF maps this process holds open, to show a call leaves none of its own behind (a leaked inner map keeps its
// memory). By map id, not by count: maps other tests leaked are closed by BpfMap's finalizer whenever V8 collects
// them, which would change a count between two readings (seen in CI: 2 before a call, 0 after it).
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** Ids of the BPF maps this process has an fd of now. */
export function openBpfMapIds(): Set<number> {
  const ids = new Set<number>();
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) !== 'anon_inode:bpf-map') continue;
      const m = /^map_id:\s*(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
      if (m !== null) ids.add(Number(m[1]));
    } catch {
      // closed since the listing
    }
  }
  return ids;
}

/** Ids of the BPF maps open now that were not open at `before` (openBpfMapIds()), ascending. */
export function mapsOpenedSince(before: ReadonlySet<number>): number[] {
  return [...openBpfMapIds()].filter((id) => !before.has(id)).sort((a, b) => a - b);
}
