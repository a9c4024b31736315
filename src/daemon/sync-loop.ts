// When the daemon syncs: requests coalesced (one sync at a time, at most one more queued), paced requests
// spaced out, retries with backoff after failed writes, a sync at a set time.
import { performance } from 'node:perf_hooks';
import { Backoff } from '../util/backoff';

/** First wait before retrying after failed datapath writes; doubles per failed retry up to the max. */
export const RETRY_MIN_MS = 1000;
export const RETRY_MAX_MS = 30_000;

/**
 * A paced sync (health flips, a down grace's end) starts no sooner after the last sync ended than that sync ran, up to
 * this long: in a storm of flips syncs take at most about half of the event loop, where back to back they took ~90%
 * of it (512 VIPs x 1000 backends, every backend going down), and each one rebuilt every VIP with a flip, its
 * backends' array and states, for the flips of one sync's time. A flip after a quiet spell syncs at once.
 */
export const PACE_MAX_MS = 250;

export interface SyncLoopOptions {
  /** One sync; a rejection is the sync's own business (logged there): the loop goes on. */
  sync: (reason: string) => Promise<void>;
  retryMinMs?: number;
  retryMaxMs?: number;
  /** PACE_MAX_MS by default; 0: paced requests are not spaced. */
  paceMaxMs?: number;
  /** The clock the pacing reads (ms; performance.now by default). */
  now?: () => number;
}

export interface SyncRequestOptions {
  /**
   * Spaced out (PACE_MAX_MS): the sync starts no sooner after the last sync's end than that sync ran (at most
   * paceMaxMs). An unpaced request, or one queued with it, runs as soon as no sync runs.
   */
  paced?: boolean;
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
  /** Whether a request queued behind the running sync is unpaced (it then follows at once). */
  private againUnpaced = false;
  /** A paced sync waiting for its turn (the waiters wait with it). */
  private paceTimer: NodeJS.Timeout | null = null;
  /** When the last sync ended (the clock of `now`), and how long it ran; null: none ran yet. */
  private lastEnd: number | null = null;
  private lastMs = 0;

  constructor(o: SyncLoopOptions) {
    this.o = {
      retryMinMs: RETRY_MIN_MS,
      retryMaxMs: RETRY_MAX_MS,
      paceMaxMs: PACE_MAX_MS,
      now: () => performance.now(),
      ...o,
    };
    this.retryBackoff = new Backoff({ initialMs: this.o.retryMinMs, maxMs: this.o.retryMaxMs });
  }

  /**
   * Asks for a sync. The promise resolves when a sync that started after this request has finished (so a
   * caller knows its change is applied), or at once after stop().
   */
  request(reason: string, o: SyncRequestOptions = {}): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.stopped) return resolve();
      this.waiters.push(resolve);
      if (this.running) {
        this.again = true;
        if (o.paced !== true) this.againUnpaced = true;
        return;
      }
      if (o.paced === true) this.pace(reason);
      else this.runNow(reason);
    });
  }

  /** One more sync after the running one (a sync that learnt its result is already stale says so), at once. */
  wantAnother(): void {
    this.again = true;
    this.againUnpaced = true;
  }

  /** How long a paced sync still waits now (ms; 0: none). */
  get paceDelay(): number {
    if (this.lastEnd === null) return 0;
    return Math.max(0, Math.min(this.lastMs, this.o.paceMaxMs) - (this.o.now() - this.lastEnd));
  }

  /** A paced sync: now if its wait is over, else when it is (one timer for every paced request meanwhile). */
  private pace(reason: string): void {
    if (this.paceTimer !== null) return;
    const wait = this.paceDelay;
    if (wait <= 0) return this.run(reason);
    this.paceTimer = setTimeout(() => {
      this.paceTimer = null;
      if (this.stopped) return;
      if (this.running !== null) this.again = true;
      else this.run(reason);
    }, wait);
    this.paceTimer.unref();
  }

  /** A sync now, taking the paced one's waiters along. */
  private runNow(reason: string): void {
    if (this.paceTimer !== null) clearTimeout(this.paceTimer);
    this.paceTimer = null;
    this.run(reason);
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
  syncAt(atMs: number | null, reason: string, o: SyncRequestOptions = {}): void {
    if (this.atTimer) clearTimeout(this.atTimer);
    this.atTimer = atMs === null ? null : setTimeout(() => void this.request(reason, o), atMs - Date.now());
    this.atTimer?.unref();
  }

  /** No more syncs start (the running one finishes: idle()); requests waiting for a paced sync resolve. */
  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.atTimer) clearTimeout(this.atTimer);
    if (this.paceTimer) clearTimeout(this.paceTimer);
    this.paceTimer = null;
    if (this.running === null) for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves when no sync runs. */
  async idle(): Promise<void> {
    await this.running?.catch(() => undefined);
  }

  private run(reason: string): void {
    const waiters = this.waiters.splice(0);
    const start = this.o.now();
    this.running = this.o
      .sync(reason)
      .catch(() => undefined)
      .finally(() => {
        this.lastEnd = this.o.now();
        this.lastMs = this.lastEnd - start;
        for (const w of waiters) w();
        this.running = null;
        if (this.again && !this.stopped) {
          const unpaced = this.againUnpaced;
          this.again = false;
          this.againUnpaced = false;
          if (unpaced) this.runNow('queued');
          else this.pace('queued');
        } else for (const w of this.waiters.splice(0)) w();
      });
  }
}
