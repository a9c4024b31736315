// The checks that a Katran row of bench:datapath measured the path it names (scripts/bench/lib/katran.ts).
import { KATRAN_MAX_CONN_RATE, katranRowProblem, type KatranCounters } from '../../scripts/bench/lib/katran';

const at = (c: Partial<KatranCounters> = {}): KatranCounters => ({
  packets: 1000n,
  synMisses: 10n,
  otherMisses: 64n,
  fallback: 0n,
  rate: 0n,
  ...c,
});

describe('katranRowProblem', () => {
  it('accepts an established row whose every packet hit the LRU', () => {
    expect(katranRowProblem('established', 500, at(), at({ packets: 1500n }))).toBeNull();
  });

  it('names LRU misses in an established row', () => {
    expect(katranRowProblem('established', 500, at(), at({ packets: 1500n, otherMisses: 66n }))).toBe(
      '2 of 500 packets missed the LRU',
    );
  });

  it('names packets that did not go through selection, and the fallback LRU', () => {
    expect(katranRowProblem('established', 500, at(), at({ packets: 1499n }))).toBe(
      '499 of 500 packets went through selection',
    );
    expect(katranRowProblem('syn', 500, at(), at({ packets: 1500n, synMisses: 510n, fallback: 3n }))).toBe(
      '3 packets used the fallback LRU (no per-CPU LRU)',
    );
  });

  it('accepts a SYN row whose every packet was a SYN miss under the flood guard', () => {
    expect(
      katranRowProblem('syn', 500, at(), at({ packets: 1500n, synMisses: 510n, rate: 500n })),
    ).toBeNull();
  });

  it('names a SYN row that was not all SYN misses', () => {
    expect(katranRowProblem('syn', 500, at(), at({ packets: 1500n, synMisses: 500n, rate: 490n }))).toBe(
      '490 of 500 packets were SYN misses',
    );
  });

  it('names a SYN row past the flood guard (Katran skips the insert there)', () => {
    const over = BigInt(KATRAN_MAX_CONN_RATE + 1);
    expect(katranRowProblem('syn', 500, at(), at({ packets: 1500n, synMisses: 510n, rate: over }))).toBe(
      `the flood guard counted ${over} new flows (over ${KATRAN_MAX_CONN_RATE}: inserts skipped)`,
    );
  });
});
