// bench:datapath's self-checks (scripts/bench/lib/datapath-checks.ts): rows measure the path they name.
import {
  conntrackEntriesFor,
  ctProblem,
  ctSample,
  hitPct,
  parseCpuList,
} from '../../scripts/bench/lib/datapath-checks';

const snap = (hit: number, miss: number, expired: number) => ({
  ct_hit: BigInt(hit),
  ct_miss: BigInt(miss),
  ct_expired: BigInt(expired),
});

describe('ctSample / hitPct', () => {
  it('counts hits and lookups (hits, misses and expired entries) between two snapshots', () => {
    const s = ctSample(snap(10, 5, 1), snap(1010, 15, 3));
    expect(s).toEqual({ hits: 1000, lookups: 1012 });
    expect(hitPct(s)).toBeCloseTo((100 * 1000) / 1012, 9);
    expect(hitPct({ hits: 0, lookups: 0 })).toBeNull();
  });
  it('names a missing counter', () => {
    expect(() => ctSample({ ct_hit: 0n, ct_miss: 0n }, snap(1, 1, 1))).toThrow('"ct_expired" is missing');
  });
});

describe('ctProblem', () => {
  it('accepts a hit row at or above 99% and fails it below, saying how many missed', () => {
    expect(ctProblem('100k', 'hit', { hits: 99_000, lookups: 100_000 })).toBeNull();
    expect(ctProblem('100k', 'hit', { hits: 98_999, lookups: 100_000 })).toBe(
      '100k: conntrack hit rate 99.00% < 99% (1001 of 100000 lookups missed: table too small or entries expired)',
    );
    expect(ctProblem('100k', 'hit', { hits: 60_000, lookups: 100_000 })).toMatch(/60\.00% < 99%/);
  });
  it('fails a hit or miss row that made no lookups (it did not reach the connection table)', () => {
    expect(ctProblem('est', 'hit', { hits: 0, lookups: 0 })).toBe(
      'est: expected conntrack hits, got no lookups',
    );
    expect(ctProblem('new', 'miss', { hits: 0, lookups: 0 })).toBe(
      'new: expected conntrack misses, got no lookups',
    );
  });
  it('accepts a miss row of misses and fails one with hits', () => {
    expect(ctProblem('new', 'miss', { hits: 0, lookups: 20_000 })).toBeNull();
    expect(ctProblem('new', 'miss', { hits: 400, lookups: 20_000 })).toBe(
      'new: expected misses, got 2.00% hits of 20000 lookups',
    );
  });
  it('fails a non-VIP row that looked the connection table up', () => {
    expect(ctProblem('non-VIP', 'none', { hits: 0, lookups: 0 })).toBeNull();
    expect(ctProblem('non-VIP', 'none', { hits: 3, lookups: 3 })).toBe(
      'non-VIP: expected no conntrack lookups, got 100.00% hits of 3 lookups',
    );
  });
});

describe('conntrackEntriesFor', () => {
  it('gives every CPU a share that holds all inserts with headroom (per-CPU LRU lists)', () => {
    expect(conntrackEntriesFor({ inserts: 200_144, possibleCpus: 2 })).toBe(250_180 * 2);
    expect(conntrackEntriesFor({ inserts: 100_000, possibleCpus: 4, headroom: 1 })).toBe(400_000);
    // Never below a small floor per CPU.
    expect(conntrackEntriesFor({ inserts: 10, possibleCpus: 2 })).toBe(2048);
  });
  it('rejects bad input naming the field', () => {
    expect(() => conntrackEntriesFor({ inserts: -1, possibleCpus: 2 })).toThrow('inserts: -1');
    expect(() => conntrackEntriesFor({ inserts: 1, possibleCpus: 0 })).toThrow('possibleCpus: 0');
    expect(() => conntrackEntriesFor({ inserts: 1, possibleCpus: 1, headroom: 0.5 })).toThrow(
      'headroom: 0.5',
    );
  });
});

describe('parseCpuList', () => {
  it('expands single CPUs and ranges', () => {
    expect(parseCpuList('1')).toEqual([1]);
    expect(parseCpuList('0-1\n')).toEqual([0, 1]);
    expect(parseCpuList('0,2-4,7')).toEqual([0, 2, 3, 4, 7]);
  });
  it('rejects what is not a CPU list', () => {
    expect(() => parseCpuList('ff')).toThrow('cpu list: "ff"');
    expect(() => parseCpuList('3-1')).toThrow('descending range');
  });
});
