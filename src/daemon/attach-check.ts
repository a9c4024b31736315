// How often the daemon checks that its XDP program is still attached: every ATTACH_CHECK_MIN_MS, unless the
// check itself is slow. The check is one netlink query, but libbpf's bpf_xdp_query() dumps every link of the
// namespace to find one: measured ~50 us with 3 interfaces, ~3.8 ms with 500 and ~24 ms with 2,000 (2 shared
// cores), on the daemon's main thread. So the interval keeps the check under ATTACH_CHECK_SHARE of that
// thread's time: 250 ms up to a few hundred interfaces, longer beyond, never longer than ATTACH_CHECK_MAX_MS
// (the previous fixed interval).

/** Shortest interval between two attachment checks. */
export const ATTACH_CHECK_MIN_MS = 250;
/** Longest interval (a node with thousands of interfaces). */
export const ATTACH_CHECK_MAX_MS = 2000;
/** Largest share of the main thread's time the checks may take. */
export const ATTACH_CHECK_SHARE = 0.01;

/** The next interval for a check that takes `costMs` (smoothed). */
export function attachCheckInterval(costMs: number): number {
  return Math.min(ATTACH_CHECK_MAX_MS, Math.max(ATTACH_CHECK_MIN_MS, Math.ceil(costMs / ATTACH_CHECK_SHARE)));
}

/**
 * Runs `check` (synchronous: its wall time is its cost) again and again, each time after attachCheckInterval
 * of the smoothed cost. stop() ends it; unref'd (it never keeps the process alive).
 */
export class AttachCheckTimer {
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  /** Smoothed cost of one check (ms); starts as if free. */
  private costMs = 0;
  private readonly check: () => void;

  constructor(check: () => void) {
    this.check = check;
    this.schedule();
  }

  /** The interval the next check waits (ms). */
  get intervalMs(): number {
    return attachCheckInterval(this.costMs);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  private tick(): void {
    const t0 = performance.now();
    try {
      this.check();
    } finally {
      const took = performance.now() - t0;
      // One slow check (a busy core) moves the interval a little, a lasting cost moves it all the way.
      this.costMs = this.costMs === 0 ? took : this.costMs * 0.8 + took * 0.2;
      this.schedule();
    }
  }
}
