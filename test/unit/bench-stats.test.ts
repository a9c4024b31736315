// The one home of quantiles and medians for the benches and the soak (scripts/bench/lib/stats.ts).
import { median, quantile, quantileOf } from '../../scripts/bench/lib/stats';

describe('quantileOf', () => {
  it('is nearest-rank quantile() over a sorted copy, leaving the input as it was', () => {
    const xs = [9, 1, 10, 3, 2, 8, 4, 7, 6, 5];
    expect(quantileOf(xs, 0.5)).toBe(5);
    expect(quantileOf(xs, 0.99)).toBe(10);
    expect(quantileOf(xs, 0)).toBe(1);
    expect(quantileOf([2, 10, 1], 0.5)).toBe(2);
    expect(xs).toEqual([9, 1, 10, 3, 2, 8, 4, 7, 6, 5]);
    expect(quantileOf([], 0.5)).toBeNaN();
    expect(() => quantileOf(xs, 1.5)).toThrow('within [0, 1], got 1.5');
    // Sorted numerically, not as text.
    expect(quantileOf([100, 9, 20], 0.5)).toBe(quantile([9, 20, 100], 0.5));
  });
});

describe('median', () => {
  it('is the middle value, or the mean of the middle two', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([100, 9])).toBe(54.5);
    expect(median([7])).toBe(7);
    expect(median([])).toBeNaN();
  });
});
