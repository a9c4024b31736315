// The one backoff rule: doubling from initialMs, capped at maxMs; jitter in [d/2, d]; reset and saturate.
import fc from 'fast-check';
import { Backoff, backoffDelayMs, jitter } from '../../src/util/backoff';

describe('backoffDelayMs', () => {
  it('doubles per attempt up to the cap; attempt 0 counts as the first', () => {
    const b = { initialMs: 1000, maxMs: 30_000 };
    expect([0, 1, 2, 3, 4, 5, 6, 7, 100, 5000].map((n) => backoffDelayMs(n, b))).toEqual([
      1000, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000, 30_000,
    ]);
    expect(backoffDelayMs(3, { initialMs: 0, maxMs: 10 })).toBe(0);
  });
});

describe('jitter', () => {
  it('stays within [d/2, d]', () => {
    expect(jitter(1000, () => 0)).toBe(500);
    expect(jitter(1000, () => 0.5)).toBe(750);
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 10_000_000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (d, r) => {
          const j = jitter(d, () => r);
          expect(j).toBeGreaterThanOrEqual(Math.floor(d / 2));
          expect(j).toBeLessThanOrEqual(d);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('Backoff', () => {
  it('hands out the doubling sequence; reset starts over; saturate jumps to the cap until reset', () => {
    const b = new Backoff({ initialMs: 200, maxMs: 1000 });
    expect([b.next(), b.next(), b.next(), b.next()]).toEqual([200, 400, 800, 1000]);
    b.reset();
    expect(b.next()).toBe(200);
    b.saturate();
    expect([b.next(), b.next()]).toEqual([1000, 1000]);
    b.reset();
    expect(b.next()).toBe(200);
  });

  it('saturates to the cap even from a zero initial delay', () => {
    const b = new Backoff({ initialMs: 0, maxMs: 50 });
    expect(b.next()).toBe(0);
    b.saturate();
    expect(b.next()).toBe(50);
  });

  it('jitters each delay when asked', () => {
    const b = new Backoff({ initialMs: 1000, maxMs: 8000, jitter: true, random: () => 0 });
    expect([b.next(), b.next(), b.next()]).toEqual([500, 1000, 2000]);
  });
});
