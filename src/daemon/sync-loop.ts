// When the daemon syncs: requests coalesced (one sync at a time, at most one more queued), retries with
// backoff after failed writes, a sync at a set time.
import { Backoff } from '../util/backoff';

/** First wait before retrying after failed datapath writes; doubles per failed retry up to the max. */
export const RETRY_MIN_MS = 1000;
export const RETRY_MAX_MS = 30_000;

export interface SyncLoopOptions {
  /** One sync; a rejection is the sync's own business (logged there): the loop goes on. */
  sync: (reason: string) => Promise<void>;
  retryMinMs?: number;
  retryMaxMs?: number;
}

export class SyncLoop {
  private readonly o: Required<SyncLoopOptions>;
  private running: Promise<void> | null = null;
  /** Another sync is wanted after the running one. */
  private again = false;
  private waiters: (() => void)[] = [];
  private stopped = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly retryBackoff: Backoff;
  private retryDelayMs = 0;
  private atTimer: NodeJS.Timeout | null = null;

  constructor(o: SyncLoopOptions) {
    this.o = { retryMinMs: RETRY_MIN_MS, retryMaxMs: RETRY_MAX_MS, ...o };
    this.retryBackoff = new Backoff({ initialMs: this.o.retryMinMs, maxMs: this.o.retryMaxMs });
  }

  /**
   * Asks for a sync. The promise resolves when a sync that started after this request has finished (so a
   * caller knows its change is applied), or at once after stop().
   */
  request(reason: string): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.stopped) return resolve();
      this.waiters.push(resolve);
      if (this.running) {
        this.again = true;
        return;
      }
      this.run(reason);
    });
  }

  /** One more sync after the running one (a sync that learnt its result is already stale says so). */
  wantAnother(): void {
    this.again = true;
  }

  /** Whether another sync was wanted, clearing it (for syncs run outside the loop, e.g. at start). */
  takeWanted(): boolean {
    const w = this.again;
    this.again = false;
    return w;
  }

  /** Syncs again later, with backoff; a retry already due stays as it is. */
  retryLater(): void {
    if (this.stopped || this.retryTimer) return;
    this.retryDelayMs = this.retryBackoff.next();
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.request('retry');
    }, this.retryDelayMs);
    this.retryTimer.unref();
  }

  /** Everything was written: no retry due, the backoff starts over. */
  succeeded(): void {
    this.retryDelayMs = 0;
    this.retryBackoff.reset();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  /** The wait before the next retry (ms; 0: none scheduled since the last success). */
  get retryDelay(): number {
    return this.retryDelayMs;
  }

  /** A sync at `atMs` (Date.now() clock), replacing the one set before; null: none. */
  syncAt(atMs: number | null, reason: string): void {
    if (this.atTimer) clearTimeout(this.atTimer);
    this.atTimer = atMs === null ? null : setTimeout(() => void this.request(reason), atMs - Date.now());
    this.atTimer?.unref();
  }

  /** No more syncs start (the running one finishes: idle()). */
  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.atTimer) clearTimeout(this.atTimer);
  }

  /** Resolves when no sync runs. */
  async idle(): Promise<void> {
    await this.running?.catch(() => undefined);
  }

  private run(reason: string): void {
    const waiters = this.waiters.splice(0);
    this.running = this.o
      .sync(reason)
      .catch(() => undefined)
      .finally(() => {
        for (const w of waiters) w();
        this.running = null;
        if (this.again && !this.stopped) {
          this.again = false;
          this.run('queued');
        } else for (const w of this.waiters.splice(0)) w();
      });
  }
}
