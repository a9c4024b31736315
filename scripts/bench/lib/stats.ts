// Pure statistics for the benches and the soak: quantiles, medians, CDF, Jain's index, balance, wrk output, recovery.

/** q-quantile (0..1) of an ascending array by the nearest-rank method; NaN for an empty array. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`quantile q must be within [0, 1], got ${q}`);
  if (sorted.length === 0) return NaN;
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[rank - 1]!;
}

/** quantile() of values in any order. */
export function quantileOf(values: ArrayLike<number>, q: number): number {
  return quantile(Float64Array.from(values).sort(), q);
}

/** Median of values in any order, the mean of the middle two for an even count; NaN for none. */
export function median(values: ArrayLike<number>): number {
  const s = Float64Array.from(values).sort();
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

/**
 * The item whose value is the median of the items that have one (the lower middle one of an even count: an item
 * that was measured, never a mean of two); undefined when none has a value. Ties keep the items' order.
 */
export function medianItem<T>(items: readonly T[], value: (item: T) => number | null): T | undefined {
  const valued = items
    .map((item, i) => ({ item, i, v: value(item) }))
    .filter((x): x is { item: T; i: number; v: number } => x.v !== null && !Number.isNaN(x.v))
    .sort((a, b) => a.v - b.v || a.i - b.i);
  return valued.length === 0 ? undefined : valued[(valued.length - 1) >> 1]!.item;
}

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** Summary of latencies (any unit); the input need not be sorted. */
export function summarize(values: ArrayLike<number>): LatencySummary {
  const s = Float64Array.from(values as ArrayLike<number>).sort();
  let sum = 0;
  for (const v of s) sum += v;
  return {
    count: s.length,
    p50: quantile(s, 0.5),
    p90: quantile(s, 0.9),
    p99: quantile(s, 0.99),
    p999: quantile(s, 0.999),
    max: s.length ? s[s.length - 1]! : NaN,
    mean: s.length ? sum / s.length : NaN,
  };
}

/** CDF points {value, fraction} at the given fractions (default: 1%..99% plus the tail). */
export function cdf(values: ArrayLike<number>, fractions?: number[]): { value: number; fraction: number }[] {
  const s = Float64Array.from(values as ArrayLike<number>).sort();
  if (s.length === 0) return [];
  const fs = fractions ?? [...Array.from({ length: 99 }, (_, i) => (i + 1) / 100), 0.995, 0.999, 1];
  return fs.map((f) => ({ value: quantile(s, f), fraction: f }));
}

/** Jain's fairness index (sum x)^2 / (n * sum x^2): 1 = perfectly even, 1/n = one gets everything. */
export function jain(counts: number[]): number {
  if (counts.length === 0) throw new RangeError('jain needs at least one count');
  if (counts.some((c) => !(c >= 0)))
    throw new RangeError(`jain counts must be >= 0, got ${JSON.stringify(counts)}`);
  const sum = counts.reduce((a, b) => a + b, 0);
  const sq = counts.reduce((a, b) => a + b * b, 0);
  return sq === 0 ? NaN : (sum * sum) / (counts.length * sq);
}

/** Largest share over the mean share (1 = perfectly even). */
export function maxOverMean(counts: number[]): number {
  if (counts.length === 0) throw new RangeError('maxOverMean needs at least one count');
  const mean = counts.reduce((a, b) => a + b, 0) / counts.length;
  return mean === 0 ? NaN : Math.max(...counts) / mean;
}

export interface WrkResult {
  requests: number;
  durationS: number;
  rps: number;
  /** Latency percentiles in microseconds (from --latency). */
  p50us: number;
  p90us: number;
  p99us: number;
  non2xx: number;
  socketErrors: number;
  errorRate: number;
}

function toUs(v: string, unit: string): number {
  const n = Number(v);
  const mult: Record<string, number> = { us: 1, ms: 1e3, s: 1e6, m: 60e6 };
  const m = mult[unit];
  if (m === undefined) throw new Error(`wrk output: unknown time unit "${unit}"`);
  return n * m;
}

/** Parses `wrk --latency` text output; throws naming what is missing if it is not wrk output. */
export function parseWrk(text: string): WrkResult {
  const req = /(\d+) requests in ([\d.]+)(us|ms|s|m)/.exec(text);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(text);
  if (!req || !rps)
    throw new Error(`not wrk output (no "N requests in" / "Requests/sec"): ${text.slice(0, 200)}`);
  const pct = (p: string): number => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m)`, 'm').exec(text);
    return m ? toUs(m[1]!, m[2]!) : NaN;
  };
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(text)?.[1] ?? 0);
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const socketErrors = se ? se.slice(1, 5).reduce((a, b) => a + Number(b), 0) : 0;
  const requests = Number(req[1]);
  const errs = non2xx + socketErrors;
  return {
    requests,
    durationS: toUs(req[2]!, req[3]!) / 1e6,
    rps: Number(rps[1]),
    p50us: pct('50'),
    p90us: pct('90'),
    p99us: pct('99'),
    non2xx,
    socketErrors,
    errorRate: requests + socketErrors === 0 ? 1 : errs / Math.max(requests, errs),
  };
}

/**
 * Recovery after a fault at faultMs: from the fault to the end of the last bucket with an error, in ms.
 * 0 when no bucket at or after the fault has errors; null when errors continue into the last bucket.
 */
export function recoveryMs(o: { bucketMs: number; errors: number[]; faultMs: number }): number | null {
  const first = Math.floor(o.faultMs / o.bucketMs);
  let last = -1;
  for (let i = Math.max(0, first); i < o.errors.length; i++) if ((o.errors[i] ?? 0) > 0) last = i;
  if (last < 0) return 0;
  if (last === o.errors.length - 1) return null;
  return Math.max(0, (last + 1) * o.bucketMs - o.faultMs);
}

/** Histogram of values into fixed-width bins starting at 0. */
export function histogram(values: number[], binWidth: number): { from: number; to: number; count: number }[] {
  if (!(binWidth > 0)) throw new RangeError(`histogram binWidth must be > 0, got ${binWidth}`);
  if (values.length === 0) return [];
  const bins = new Map<number, number>();
  for (const v of values) {
    const b = Math.floor(v / binWidth);
    bins.set(b, (bins.get(b) ?? 0) + 1);
  }
  const max = Math.max(...bins.keys());
  return Array.from({ length: max + 1 }, (_, b) => ({
    from: b * binWidth,
    to: (b + 1) * binWidth,
    count: bins.get(b) ?? 0,
  }));
}

/**
 * The slowest of a loop's changes and its place in it ("slowest 51.2 ms, change 1 of 200"): the loop alternates an
 * addition (adds[i]) and its removal (removes[i]), so the place tells e.g. the first change after the start (its code
 * not optimised yet) from a later one.
 */
export function slowest(adds: readonly number[], removes: readonly number[]): string {
  const seq = inOrder(adds, removes);
  let at = 0;
  for (let i = 1; i < seq.length; i++) if (seq[i]! > seq[at]!) at = i;
  return seq.length === 0
    ? 'no changes'
    : `slowest ${seq[at]!.toFixed(1)} ms, change ${at + 1} of ${seq.length}`;
}

/** The warm-up changes run before the timed ones, in order (adds[i] then removes[i]): "first N after the start, not
 * counted: a, b, ... ms". */
export function warmupText(adds: readonly number[], removes: readonly number[]): string {
  const seq = inOrder(adds, removes);
  return seq.length === 0
    ? 'no warm-up'
    : `first ${seq.length} after the start, not counted: ${seq.map((v) => v.toFixed(0)).join(', ')} ms`;
}

/** Changes in the order they ran: adds[0], removes[0], adds[1], ... (an addition may lack its removal). */
function inOrder(adds: readonly number[], removes: readonly number[]): number[] {
  return adds.flatMap((a, i) => (i < removes.length ? [a, removes[i]!] : [a]));
}
