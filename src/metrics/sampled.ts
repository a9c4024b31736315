// A value too costly to read on every scrape (walking a map of a million entries), read at most once per
// interval: a scrape within the interval gets the last reading; concurrent scrapes share one read.

export class Sampled<T> {
  private value: T | null = null;
  private readAt = -Infinity;
  private inFlight: Promise<T> | null = null;
  private readonly read: () => Promise<T>;
  private readonly intervalMs: number;
  private readonly now: () => number;

  constructor(o: { read: () => Promise<T>; intervalMs: number; now?: () => number }) {
    if (!(Number.isFinite(o.intervalMs) && o.intervalMs >= 0))
      throw new RangeError(`intervalMs: ${o.intervalMs} is not a finite number >= 0`);
    this.read = o.read;
    this.intervalMs = o.intervalMs;
    this.now = o.now ?? (() => performance.now());
  }

  /** The last reading if younger than the interval, else a fresh one (a failed read is not kept). */
  get(): Promise<T> {
    if (this.value !== null && this.now() - this.readAt < this.intervalMs) return Promise.resolve(this.value);
    if (this.inFlight !== null) return this.inFlight;
    const run = this.read().then((v) => {
      this.value = v;
      this.readAt = this.now();
      return v;
    });
    this.inFlight = run;
    const done = (): void => {
      this.inFlight = null;
    };
    run.then(done, done);
    return run;
  }
}
