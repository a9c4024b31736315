// The one home of quantiles and medians for the benches and the soak (scripts/bench/lib/stats.ts).
import { median, medianItem, quantile, quantileOf, slowest, warmupText } from '../../scripts/bench/lib/stats';

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

describe('medianItem', () => {
  const run = (name: string, ms: number | null) => ({ name, ms });
  const pick = (runs: { name: string; ms: number | null }[]) => medianItem(runs, (r) => r.ms)?.name;
  it('is the item with the median value, whatever the order', () => {
    expect(pick([run('a', 2.4), run('b', 1.9), run('c', 2.1)])).toBe('c');
    expect(pick([run('a', 1.9), run('b', 2.1), run('c', 2.4)])).toBe('b');
    expect(pick([run('a', 7)])).toBe('a');
  });
  it('takes the lower middle item of an even count (a measured one, not a mean)', () => {
    expect(pick([run('a', 4), run('b', 1), run('c', 3), run('d', 2)])).toBe('d');
  });
  it('leaves out items without a value; none with one gives undefined', () => {
    expect(pick([run('a', null), run('b', 5), run('c', Number.NaN), run('d', 3), run('e', 9)])).toBe('b');
    expect(pick([run('a', null)])).toBeUndefined();
    expect(pick([])).toBeUndefined();
  });
  it('keeps the input order between equal values', () => {
    expect(pick([run('a', 2), run('b', 2), run('c', 2)])).toBe('b');
    expect(pick([run('x', 1), run('y', 1)])).toBe('x');
  });
});

describe('slowest', () => {
  it('names the slowest change and its place in the add, remove, add, ... sequence', () => {
    expect(slowest([5, 9, 4], [6, 3, 30])).toBe('slowest 30.0 ms, change 6 of 6');
    expect(slowest([50, 9], [6, 3])).toBe('slowest 50.0 ms, change 1 of 4');
    expect(slowest([5, 9], [6, 10])).toBe('slowest 10.0 ms, change 4 of 4');
    expect(slowest([5, 9], [6])).toBe('slowest 9.0 ms, change 3 of 3'); // an addition without its removal
    expect(slowest([5, 5], [5, 5])).toBe('slowest 5.0 ms, change 1 of 4'); // ties: the first
    expect(slowest([], [])).toBe('no changes');
  });
});

describe('warmupText', () => {
  it('lists the warm-up changes in the order they ran, whole milliseconds', () => {
    expect(warmupText([103.4, 81.2], [27.6, 26.5])).toBe(
      'first 4 after the start, not counted: 103, 28, 81, 27 ms',
    );
    expect(warmupText([12], [])).toBe('first 1 after the start, not counted: 12 ms');
    expect(warmupText([], [])).toBe('no warm-up');
  });
});
