// HealthMonitor: runs the checks of every backend membership on jittered schedules (one timer) and emits state changes.
import { EventEmitter } from 'node:events';
import type { HealthCheckConfig } from '../model/config';
import { checkHttp, checkTcp, CheckResult, LOCAL_ERROR_CODES } from './checks';
import { HealthState, HealthStatus, initialHealth, nextHealth } from './state';

export interface HealthTarget {
  /** Membership key (DesiredBackend.key): what desiredState looks health up by. */
  key: string;
  /** VIP name, for per-VIP reporting. */
  vip: string;
  address: string;
  check: HealthCheckConfig;
  /** Status before the first result (default up: a (re)started daemon does not blackhole a VIP). */
  initial?: HealthStatus;
}

export interface HealthChange {
  key: string;
  vip: string;
  address: string;
  from: HealthStatus;
  to: HealthStatus;
  /** The result that tipped it. */
  result: CheckResult;
}

/** A check that gave no verdict because it failed on this host (CheckResult.local): the status stayed. */
export interface LocalCheckError {
  key: string;
  vip: string;
  address: string;
  result: CheckResult;
}

export interface VipAvailability {
  vip: string;
  /** Checked backends currently up. */
  up: number;
  total: number;
}

export interface TargetSnapshot {
  key: string;
  vip: string;
  address: string;
  type: HealthCheckConfig['type'];
  status: HealthStatus;
  /** When the status last flipped (clock ms); null: not since the target was added (its initial status). */
  since: number | null;
  successes: number;
  failures: number;
  checks: number;
  failedChecks: number;
  /** Checks that could not be made from this host (not counted in checks): no verdict. */
  localErrors: number;
  last: (CheckResult & { at: number }) | null;
}

/** Runs one check; injectable for tests of the scheduling logic. */
export type Checker = (target: HealthTarget) => Promise<CheckResult>;

export const defaultChecker: Checker = (t) =>
  t.check.type === 'http'
    ? checkHttp({ host: t.address, port: t.check.port, path: t.check.path, timeoutMs: t.check.timeoutMs })
    : checkTcp({ host: t.address, port: t.check.port, timeoutMs: t.check.timeoutMs });

export interface HealthMonitorOptions {
  /** Each interval is scaled by 1 ± jitter (uniform); default 0.1. The first check waits U(0, interval). */
  jitter?: number;
  random?: () => number;
  checker?: Checker;
  /** Time of status flips (`since`), in ms; default Date.now (the clock the daemon passes as desiredState's now). */
  clock?: () => number;
}

interface Entry {
  target: HealthTarget;
  state: HealthState;
  /** When state.status last flipped (clock ms); null: never while monitored. */
  since: number | null;
  /** Bumped whenever the entry is (re)scheduled or cancelled: queued slots of an older value are stale. */
  slot: number;
  running: boolean;
  checks: number;
  failedChecks: number;
  localErrors: number;
  last: (CheckResult & { at: number }) | null;
  /** Bumped when the entry is replaced or removed: a result of an older generation is ignored. */
  generation: number;
}

/** A queued check: due time (performance.now ms), its entry, and the entry's slot and generation then. */
interface Queued {
  at: number;
  entry: Entry;
  slot: number;
  gen: number;
}

function siftDown(h: Queued[], i: number): void {
  for (;;) {
    const l = 2 * i + 1;
    const r = l + 1;
    let m = i;
    if (l < h.length && h[l]!.at < h[m]!.at) m = l;
    if (r < h.length && h[r]!.at < h[m]!.at) m = r;
    if (m === i) return;
    [h[i], h[m]] = [h[m]!, h[i]!];
    i = m;
  }
}

function heapPush(h: Queued[], q: Queued): void {
  h.push(q);
  for (let i = h.length - 1; i > 0;) {
    const p = (i - 1) >> 1;
    if (h[p]!.at <= h[i]!.at) break;
    [h[i], h[p]] = [h[p]!, h[i]!];
    i = p;
  }
}

function heapPop(h: Queued[]): Queued | undefined {
  const top = h[0];
  const last = h.pop();
  if (h.length > 0 && last !== undefined) {
    h[0] = last;
    siftDown(h, 0);
  }
  return top;
}

function heapify(h: Queued[]): void {
  for (let i = (h.length >> 1) - 1; i >= 0; i--) siftDown(h, i);
}

const sameCheck = (a: HealthCheckConfig, b: HealthCheckConfig): boolean =>
  a.type === b.type &&
  a.port === b.port &&
  a.path === b.path &&
  a.intervalMs === b.intervalMs &&
  a.timeoutMs === b.timeoutMs &&
  a.rise === b.rise &&
  a.fall === b.fall;

/**
 * Events: 'change' (HealthChange) when a backend flips; 'vip' (VipAvailability) when a VIP's count of
 * up backends changes between zero and non-zero (0 up = cannot be served; BGP withdraws it); 'localError'
 * (LocalCheckError) for each check that failed on this host and so left the status as it was.
 */
export class HealthMonitor extends EventEmitter {
  private readonly entries = new Map<string, Entry>();
  /** Up / total per VIP name, kept current so a check result costs O(1), not O(targets). */
  private perVip = new Map<string, VipAvailability>();
  private readonly jitter: number;
  private readonly random: () => number;
  private readonly checker: Checker;
  private readonly clock: () => number;
  private started = false;
  private generation = 0;
  /** Queued checks, earliest first (a binary heap), and the one timer armed for the earliest. */
  private queue: Queued[] = [];
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  /** Checks without a verdict since the monitor was made, by reason (an errno code, or "checker": it threw). */
  private readonly localErrorCounts = new Map<string, number>();

  constructor(opts: HealthMonitorOptions = {}) {
    super();
    this.jitter = opts.jitter ?? 0.1;
    if (!(this.jitter >= 0 && this.jitter < 1))
      throw new RangeError(`jitter: ${this.jitter} is not in [0, 1)`);
    this.random = opts.random ?? Math.random;
    this.checker = opts.checker ?? defaultChecker;
    this.clock = opts.clock ?? Date.now;
  }

  /** Replaces the set of targets: unchanged ones keep state and timers, changed checks restart counting. */
  setTargets(targets: readonly HealthTarget[]): void {
    const seen = new Set<string>();
    const before = this.availability();
    for (const t of targets) {
      if (seen.has(t.key)) throw new RangeError(`targets: key ${JSON.stringify(t.key)} appears twice`);
      seen.add(t.key);
      const old = this.entries.get(t.key);
      if (old !== undefined && sameCheck(old.target.check, t.check) && old.target.address === t.address) {
        old.target = t;
        continue;
      }
      if (old !== undefined) this.cancel(old);
      const entry: Entry = {
        target: t,
        state: initialHealth(old?.state.status ?? t.initial ?? 'up'),
        since: old?.since ?? null,
        slot: 0,
        running: false,
        checks: old?.checks ?? 0,
        failedChecks: old?.failedChecks ?? 0,
        localErrors: old?.localErrors ?? 0,
        last: old?.last ?? null,
        generation: ++this.generation,
      };
      this.entries.set(t.key, entry);
      if (this.started) this.schedule(entry, this.random() * t.check.intervalMs);
    }
    for (const [key, e] of this.entries)
      if (!seen.has(key)) {
        this.cancel(e);
        this.entries.delete(key);
      }
    const perVip = new Map<string, VipAvailability>();
    for (const e of this.entries.values()) {
      const a = perVip.get(e.target.vip) ?? { vip: e.target.vip, up: 0, total: 0 };
      a.total++;
      if (e.state.status === 'up') a.up++;
      perVip.set(e.target.vip, a);
    }
    this.perVip = perVip;
    this.emitAvailability(before);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    for (const e of this.entries.values()) this.schedule(e, this.random() * e.target.check.intervalMs);
  }

  stop(): void {
    this.started = false;
    for (const e of this.entries.values()) this.cancel(e);
    this.queue.length = 0;
    this.arm();
  }

  /** Status by membership key: the `health` input of desiredState. */
  statuses(): Map<string, HealthStatus> {
    return new Map([...this.entries].map(([k, e]) => [k, e.state.status]));
  }

  /**
   * When each target's status last flipped (clock ms), for targets that flipped while monitored: the
   * `healthSince` input of desiredState (a backend down by health check keeps its flows for a grace from then).
   */
  since(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [k, e] of this.entries) if (e.since !== null) out.set(k, e.since);
    return out;
  }

  /** Checks that failed on this host since the monitor was made, by reason (monotonic: a Prometheus counter). */
  localErrors(): Map<string, number> {
    return new Map(this.localErrorCounts);
  }

  /** Checked backends up / total per VIP name. */
  availability(): Map<string, VipAvailability> {
    return new Map([...this.perVip].map(([vip, a]) => [vip, { ...a }]));
  }

  /** Per target: status, counters and the last result (for /state and metrics). */
  snapshot(): TargetSnapshot[] {
    return [...this.entries.values()].map((e) => ({
      key: e.target.key,
      vip: e.target.vip,
      address: e.target.address,
      type: e.target.check.type,
      status: e.state.status,
      since: e.since,
      successes: e.state.successes,
      failures: e.state.failures,
      checks: e.checks,
      failedChecks: e.failedChecks,
      localErrors: e.localErrors,
      last: e.last,
    }));
  }

  private cancel(e: Entry): void {
    e.slot++;
    e.generation = -1;
  }

  /** Queues the entry's next check in delayMs (one timer serves every target: see arm). */
  private schedule(e: Entry, delayMs: number): void {
    e.slot++;
    // Stale slots (cancelled or rescheduled) are dropped lazily; compact when they pile up.
    if (this.queue.length > 2 * this.entries.size + 1024)
      heapify((this.queue = this.queue.filter((q) => q.slot === q.entry.slot)));
    heapPush(this.queue, { at: performance.now() + delayMs, entry: e, slot: e.slot, gen: e.generation });
    this.arm();
  }

  /** Arms the single timer for the earliest queued check. */
  private arm(): void {
    const next = this.queue[0];
    if (next === undefined) {
      if (this.timer !== null) clearTimeout(this.timer);
      this.timer = null;
      this.timerAt = Infinity;
      return;
    }
    if (this.timer !== null && this.timerAt <= next.at) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timerAt = next.at;
    this.timer = setTimeout(this.fire, Math.max(0, next.at - performance.now()));
    this.timer.unref();
  }

  /** Runs every check that is due, then re-arms. */
  private readonly fire = (): void => {
    this.timer = null;
    this.timerAt = Infinity;
    const now = performance.now();
    while (this.queue.length > 0 && this.queue[0]!.at <= now) {
      const q = heapPop(this.queue)!;
      if (q.slot !== q.entry.slot) continue;
      this.runCheck(q.entry, q.gen).catch((err: unknown) => this.emit('error', err));
    }
    this.arm();
  };

  private async runCheck(e: Entry, gen: number): Promise<void> {
    if (e.running) return;
    e.running = true;
    let result: CheckResult;
    try {
      result = await this.checker(e.target);
    } catch (err) {
      // The checker itself broke, not the backend: no verdict either.
      const detail = `check failed: ${(err as Error)?.message ?? err}`;
      result = { ok: false, durationMs: 0, detail, local: true };
    } finally {
      e.running = false;
    }
    // Replaced or removed meanwhile, or the monitor stopped: drop the result.
    if (gen !== e.generation || !this.started) return;
    // Every check, for the duration histogram (peak_xdp_health_check_duration_seconds).
    const outcome = result.local === true ? 'local_error' : result.ok ? 'success' : 'failure';
    this.emit('checked', { type: e.target.check.type, result: outcome, durationMs: result.durationMs });
    if (result.local === true) return this.noVerdict(e, result);
    e.checks++;
    if (!result.ok) e.failedChecks++;
    e.last = { ...result, at: Date.now() };
    const { state, changed } = nextHealth(e.state, result.ok, e.target.check);
    const from = e.state.status;
    e.state = state;
    if (changed) {
      e.since = this.clock();
      const change: HealthChange = {
        key: e.target.key,
        vip: e.target.vip,
        address: e.target.address,
        from,
        to: state.status,
        result,
      };
      this.emit('change', change);
      const a = this.perVip.get(e.target.vip);
      if (a !== undefined) {
        const wasZero = a.up === 0;
        a.up += state.status === 'up' ? 1 : -1;
        // Only a VIP's change between zero and non-zero up backends is an event.
        if (wasZero !== (a.up === 0)) this.emit('vip', { ...a });
      }
    }
    const interval = e.target.check.intervalMs;
    this.schedule(e, interval * (1 + this.jitter * (2 * this.random() - 1)));
  }

  /**
   * A check that failed on this host (out of fds, buffers, ports; or the checker threw): the status and the
   * rise/fall streaks stay as they were, so a loaded balancer host does not take its healthy backends out.
   */
  private noVerdict(e: Entry, result: CheckResult): void {
    e.localErrors++;
    e.last = { ...result, at: Date.now() };
    const reason = LOCAL_ERROR_CODES.has(result.detail) ? result.detail : 'checker';
    this.localErrorCounts.set(reason, (this.localErrorCounts.get(reason) ?? 0) + 1);
    const ev: LocalCheckError = { key: e.target.key, vip: e.target.vip, address: e.target.address, result };
    this.emit('localError', ev);
    const interval = e.target.check.intervalMs;
    this.schedule(e, interval * (1 + this.jitter * (2 * this.random() - 1)));
  }

  private emitAvailability(before: Map<string, VipAvailability>): void {
    const after = this.availability();
    for (const [vip, a] of after) {
      const b = before.get(vip);
      if (b === undefined || (b.up === 0) !== (a.up === 0)) this.emit('vip', a);
    }
  }
}
