// Exponential backoff: the one rule for every retry in the daemon (BGP reconnects, Kubernetes watches,
// datapath write retries, speaker worker restarts): initial delay, doubled per failure, capped.

export interface BackoffBounds {
  /** Delay before the first retry (ms). */
  initialMs: number;
  /** Largest delay (ms). */
  maxMs: number;
}

/** Delay before retry number `attempt` (1 = the first): initialMs doubled per earlier retry, at most maxMs. */
export function backoffDelayMs(attempt: number, b: BackoffBounds): number {
  return Math.min(b.maxMs, b.initialMs * 2 ** (Math.max(1, attempt) - 1));
}

/** `delayMs` spread uniformly over [delayMs/2, delayMs]: nodes that failed together do not retry in lock-step. */
export function jitter(delayMs: number, random: () => number = Math.random): number {
  return Math.round(delayMs * (0.5 + random() * 0.5));
}

/** The state of one retry loop: each next() is the delay before the next retry. */
export class Backoff {
  private attempt = 0;
  private saturated = false;

  constructor(private readonly o: BackoffBounds & { jitter?: boolean; random?: () => number }) {}

  /** The delay before the next retry; the one after it is twice as long, up to maxMs. */
  next(): number {
    this.attempt++;
    const d = this.saturated ? this.o.maxMs : backoffDelayMs(this.attempt, this.o);
    return this.o.jitter ? jitter(d, this.o.random) : d;
  }

  /** After a success: the next delay is initialMs again. */
  reset(): void {
    this.attempt = 0;
    this.saturated = false;
  }

  /** The next delay is maxMs already: for a cause the other side will likely repeat. */
  saturate(): void {
    this.saturated = true;
  }
}
