// Pure checks of bench:datapath: that each timed row measured the path it names (conntrack hit or miss, VIP
// lookup mode), and how big the connection table must be so that no row runs out of it.

/** What a row's connection-table lookups must be: all hits, all misses, or no lookups at all. */
export type CtExpectation = 'hit' | 'miss' | 'none';

/** Hit rate a 'hit' row must reach (and a 'miss' row must stay under 100 minus it), in percent. */
export const CT_HIT_FLOOR_PCT = 99;

export interface CtSample {
  hits: number;
  lookups: number;
}

/** Conntrack hits / lookups of one timed pass, from two counter snapshots (ct_hit, ct_miss, ct_expired). */
export function ctSample(
  before: Record<string, bigint | undefined>,
  after: Record<string, bigint | undefined>,
): CtSample {
  const d = (name: string): number => {
    const a = after[name];
    const b = before[name];
    if (a === undefined || b === undefined) throw new TypeError(`counters: "${name}" is missing`);
    return Number(a - b);
  };
  const hits = d('ct_hit');
  return { hits, lookups: hits + d('ct_miss') + d('ct_expired') };
}

/** Hit rate in percent (null: no lookups). */
export function hitPct(s: CtSample): number | null {
  return s.lookups > 0 ? (100 * s.hits) / s.lookups : null;
}

/**
 * Why a timed pass did not measure the path its row claims, or null when it did: a 'hit' row below
 * CT_HIT_FLOOR_PCT (entries evicted or expired: the row timed misses), a 'miss' row with hits, a 'none' row
 * with lookups, or a row that expected lookups and made none.
 */
export function ctProblem(row: string, want: CtExpectation, s: CtSample): string | null {
  const pct = hitPct(s);
  const got = pct === null ? 'no lookups' : `${pct.toFixed(2)}% hits of ${s.lookups} lookups`;
  if (want === 'none') return s.lookups === 0 ? null : `${row}: expected no conntrack lookups, got ${got}`;
  if (pct === null) return `${row}: expected conntrack ${want === 'hit' ? 'hits' : 'misses'}, got no lookups`;
  if (want === 'hit' && pct < CT_HIT_FLOOR_PCT)
    return `${row}: conntrack hit rate ${pct.toFixed(2)}% < ${CT_HIT_FLOOR_PCT}% (${s.lookups - s.hits} of ${s.lookups} lookups missed: table too small or entries expired)`;
  if (want === 'miss' && pct > 100 - CT_HIT_FLOOR_PCT) return `${row}: expected misses, got ${got}`;
  return null;
}

/**
 * max_entries for the connection table so that `inserts` entries made from one CPU all fit: with
 * BPF_F_NO_COMMON_LRU each possible CPU owns max_entries / CPUs of the entries, and an insert on a CPU whose
 * share is full evicts even when other CPUs' shares are empty. `headroom` (≥ 1) covers the LRU's batching.
 */
export function conntrackEntriesFor(o: { inserts: number; possibleCpus: number; headroom?: number }): number {
  const headroom = o.headroom ?? 1.25;
  if (!Number.isInteger(o.inserts) || o.inserts < 0)
    throw new RangeError(`inserts: ${o.inserts} is not a non-negative integer`);
  if (!Number.isInteger(o.possibleCpus) || o.possibleCpus < 1)
    throw new RangeError(`possibleCpus: ${o.possibleCpus} is not a positive integer`);
  if (!(headroom >= 1)) throw new RangeError(`headroom: ${headroom} is not >= 1`);
  return Math.max(1024, Math.ceil(o.inserts * headroom)) * o.possibleCpus;
}

/** Parses a /proc/PID/status `Cpus_allowed_list` value ("1", "0-1", "0,2-3") into CPU numbers. */
export function parseCpuList(text: string): number[] {
  const out: number[] = [];
  for (const part of text.trim().split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new TypeError(`cpu list: ${JSON.stringify(text)} is not like "0-1,3"`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new TypeError(`cpu list: ${JSON.stringify(part)} is a descending range`);
    for (let c = a; c <= b; c++) out.push(c);
  }
  return out;
}
