// HealthMonitor: one probe per distinct target (probes.ts probeKey) shared by every membership that checks
// it, on jittered schedules (three queues, one timer), a bounded number in flight; results fan out to each
// membership's own rise/fall state (kept in columns, not objects), and state changes are emitted per membership.
import { EventEmitter } from 'node:events';
import type { HealthCheckConfig } from '../model/config';
import {
  CancelProbe,
  checkHttp,
  checkTcp,
  CheckResult,
  LOCAL_ERROR_CODES,
  probeHttp,
  probeTcp,
} from './checks';
import { DueQueue } from './due-queue';
import { defaultMaxInFlight, groupProbes, jittered, probeKey, quickReserve, takesResult } from './probes';
import { HealthStatus, statusAfter } from './state';

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
  /** Results this membership took (a shared probe's result counts for each membership that took it). */
  checks: number;
  failedChecks: number;
  /** Checks that could not be made from this host (not counted in checks): no verdict. */
  localErrors: number;
  last: (CheckResult & { at: number }) | null;
}

/** The probing side, for metrics and benchmarks. */
export interface ProbeStats {
  /** Distinct probes (memberships sharing a target share one). */
  probes: number;
  memberships: number;
  inFlight: number;
  maxInFlight: number;
  /** Probes started since the monitor was made. */
  started: number;
  /** Probes started more than LATE_MS after due (the in-flight cap was reached, or the loop was busy). */
  delayed: number;
  /** Of those, probes that waited because the in-flight cap was reached after they were due. */
  delayedByCap: number;
  /** The latest start after its due time of any probe (ms) since the monitor was made. */
  maxLatenessMs: number;
  /** Probes due now and not started (waiting for a slot, or for the next event-loop turn). */
  backlog: number;
  /** How long the longest-waiting of those has been due (ms); 0: none. */
  backlogAgeMs: number;
  /**
   * Slots the probes would hold if every target timed out (sum of timeout / interval): above maxInFlight, dead
   * backends are probed late and marked down later than rise/fall x interval (see timeoutDownBoundMs).
   */
  worstCaseInFlight: number;
}

/** The in-flight cap stopping due probes (saturated) or no longer (drained): emitted on each change. */
export interface BacklogChange {
  saturated: boolean;
  /** When it became saturated (performance.now ms); with saturated false: how long it lasted (ms). */
  since: number;
  durationMs: number;
  maxInFlight: number;
  backlog: number;
  /** Probes started late because of the cap since the monitor was made. */
  delayedByCap: number;
}

/**
 * Runs one probe; injectable for tests of the scheduling logic. The target is the probe's first membership
 * (with the probe's interval); the signal aborts it when the monitor stops or the target goes away.
 */
export type Checker = (target: HealthTarget, signal: AbortSignal) => Promise<CheckResult>;

export const defaultChecker: Checker = (t, signal) =>
  t.check.type === 'http'
    ? checkHttp({ host: t.address, port: t.check.port, path: t.check.path, timeoutMs: t.check.timeoutMs, signal }) // prettier-ignore
    : checkTcp({ host: t.address, port: t.check.port, timeoutMs: t.check.timeoutMs, signal });

/**
 * Runs one probe, by callback (what the monitor runs; a Checker is adapted to it): `done` is called exactly
 * once, later or from the returned cancel. No promise or AbortSignal per probe: at tens of thousands of
 * timing-out probes a second their cost showed in the profile.
 */
export type Prober = (target: HealthTarget, done: (r: CheckResult) => void) => CancelProbe;

export const defaultProber: Prober = (t, done) =>
  t.check.type === 'http'
    ? probeHttp({ host: t.address, port: t.check.port, path: t.check.path, timeoutMs: t.check.timeoutMs }, done) // prettier-ignore
    : probeTcp({ host: t.address, port: t.check.port, timeoutMs: t.check.timeoutMs }, done);

/** A Checker as a Prober: cancel aborts its signal; a checker that throws or rejects is a local error. */
export function checkerProber(checker: Checker): Prober {
  return (t, done) => {
    const ac = new AbortController();
    let check: Promise<CheckResult>;
    try {
      check = checker(t, ac.signal);
    } catch (err) {
      check = Promise.reject(err);
    }
    // The monitor's done reports its own failures as 'error' events.
    void check
      .catch((err: unknown): CheckResult => {
        // The checker itself broke, not the backend: no verdict either.
        const detail = `check failed: ${(err as Error)?.message ?? err}`;
        return { ok: false, durationMs: 0, detail, local: true };
      })
      .then(done);
    return () => ac.abort();
  };
}

export interface HealthMonitorOptions {
  /** Each interval is scaled by 1 ± jitter (uniform); default 0.1. The first check waits U(0, interval). */
  jitter?: number;
  random?: () => number;
  /** The probe runner (default defaultProber); or `checker`, a promise-returning one (not both). */
  prober?: Prober;
  checker?: Checker;
  /** Time of status flips (`since`), in ms; default Date.now (the clock the daemon passes as desiredState's now). */
  clock?: () => number;
  /**
   * Probes in flight at most (each holds a socket); default defaultMaxInFlight(null). Due probes beyond wait:
   * quick ones (their last run did not time out) first, then slow ones, then slow ones whose memberships are
   * all down already (their timeouts change nothing), each earliest due first.
   */
  maxInFlight?: number;
  /** Probes started per event-loop turn at most (default 256): a due burst never holds the loop for long. */
  startsPerTurn?: number;
}

/** A probe starting this much after its due time counts as delayed (timers and turns take a few ms). */
export const LATE_MS = 50;

/** A probe's result as its memberships keep it (one object per result, shared by all that took it). */
type LastResult = CheckResult & { at: number };

/**
 * A result with its time, built field by field: a spread of results of several shapes (timedOut, local or
 * neither) took the slow path, the largest line of the monitor's profile with 18,000 results a second.
 */
function lastResult(r: CheckResult, at: number): LastResult {
  const last: LastResult = { ok: r.ok, durationMs: r.durationMs, detail: r.detail, at };
  if (r.timedOut !== undefined) last.timedOut = r.timedOut;
  if (r.local !== undefined) last.local = r.local;
  return last;
}

/** Status codes of Memberships.status. */
const UP = 0;
const DOWN = 1;
const STATUS: readonly HealthStatus[] = ['up', 'down'];
const statusCode = (s: HealthStatus): number => (s === 'up' ? UP : DOWN);

/**
 * Every membership's state as columns indexed by membership (in targets order), and per-VIP counts. At
 * 512 x 100 an object per membership (with a state object, its target and its probe key string) held ~360 B
 * of heap and every result allocated a state per membership; columns hold ~120 B and a result allocates none.
 */
class Memberships {
  /** Membership key -> index. */
  readonly index = new Map<string, number>();
  readonly keys: string[];
  /** Index into vipNames. */
  readonly vip: Int32Array;
  readonly probe: Probe[];
  readonly check: HealthCheckConfig[];
  /** UP or DOWN. */
  readonly status: Uint8Array;
  /** Consecutive successes, failures (the streaks of state.ts). */
  readonly successes: Uint32Array;
  readonly failures: Uint32Array;
  /** When the status last flipped (clock ms); NaN: not while monitored. */
  readonly since: Float64Array;
  readonly checks: Float64Array;
  readonly failedChecks: Float64Array;
  readonly localErrors: Float64Array;
  /** Start (performance.now ms) of the probe whose result it last took; -Infinity: none yet. */
  readonly fedAt: Float64Array;
  readonly last: (LastResult | null)[];
  readonly vipNames: string[] = [];
  readonly vipIndex = new Map<string, number>();
  /** Checked backends up, and in all, per VIP (by vip index; kept current: a result costs O(its memberships)). */
  vipUp = new Int32Array(0);
  vipTotal = new Int32Array(0);

  constructor(readonly size: number) {
    this.keys = new Array<string>(size);
    this.vip = new Int32Array(size);
    this.probe = new Array<Probe>(size);
    this.check = new Array<HealthCheckConfig>(size);
    this.status = new Uint8Array(size);
    this.successes = new Uint32Array(size);
    this.failures = new Uint32Array(size);
    this.since = new Float64Array(size).fill(NaN);
    this.checks = new Float64Array(size);
    this.failedChecks = new Float64Array(size);
    this.localErrors = new Float64Array(size);
    this.fedAt = new Float64Array(size).fill(-Infinity);
    this.last = new Array<LastResult | null>(size).fill(null);
  }

  vipOf(name: string): number {
    let v = this.vipIndex.get(name);
    if (v === undefined) {
      v = this.vipNames.push(name) - 1;
      this.vipIndex.set(name, v);
    }
    return v;
  }

  /** Counts up / total per VIP from the statuses (after the columns are filled). */
  countVips(): void {
    this.vipUp = new Int32Array(this.vipNames.length);
    this.vipTotal = new Int32Array(this.vipNames.length);
    for (let i = 0; i < this.size; i++) {
      const v = this.vip[i]!;
      this.vipTotal[v] = this.vipTotal[v]! + 1;
      if (this.status[i] === UP) this.vipUp[v] = this.vipUp[v]! + 1;
    }
  }

  /** Copies the whole state of membership j of `from` into i (a kept membership). */
  copyFrom(i: number, from: Memberships, j: number): void {
    this.status[i] = from.status[j]!;
    this.successes[i] = from.successes[j]!;
    this.failures[i] = from.failures[j]!;
    this.since[i] = from.since[j]!;
    this.checks[i] = from.checks[j]!;
    this.failedChecks[i] = from.failedChecks[j]!;
    this.localErrors[i] = from.localErrors[j]!;
    this.fedAt[i] = from.fedAt[j]!;
    this.last[i] = from.last[j]!;
  }
}

const EMPTY = new Memberships(0);

/** One run of a probe. */
interface Run {
  startedAt: number;
  /** Started from the slow or settled queue (counted in slowInFlight). */
  slow: boolean;
  cancel: CancelProbe | null;
  /** Cancelled (target gone, monitor stopped): its result is dropped. */
  cancelled: boolean;
}

interface Probe {
  key: string;
  /** Its first membership's target at the probe's interval: what the checker gets. */
  target: HealthTarget;
  /** Its memberships (indexes into the monitor's Memberships): groupProbes' array itself (an Int32Array per
   * probe was ~145 B more each: 7 MB at 51,200 backends). */
  members: readonly number[];
  /** Bumped whenever the probe is (re)queued or cancelled: queued slots of an older value are stale. */
  slot: number;
  /** The run in flight; null: none. */
  running: Run | null;
  /**
   * Its last verdict was a timeout (a dead backend that drops SYNs), or it has none yet: it waits behind
   * quick probes when slots or turns run short, since it may hold a slot ~1000x longer than a probe that
   * connects or is refused. (A first probe counts as slow so that, at a start with thousands of dead
   * backends, a healthy backend's second probe does not queue behind all their first ones.)
   */
  slow: boolean;
  /** Start of the last probe (performance.now ms); null: never. */
  lastStart: number | null;
  /** False once the probe is gone (its members moved or removed): a late result is dropped. */
  live: boolean;
}

/** Two checks probe alike (same type, port, path, timing and thresholds). */
export const sameCheck = (a: HealthCheckConfig, b: HealthCheckConfig): boolean =>
  a.type === b.type &&
  a.port === b.port &&
  a.path === b.path &&
  a.intervalMs === b.intervalMs &&
  a.timeoutMs === b.timeoutMs &&
  a.rise === b.rise &&
  a.fall === b.fall;

/**
 * Events: 'change' (HealthChange) when a membership flips; 'vip' (VipAvailability) when a VIP's count of
 * up backends changes between zero and non-zero (0 up = cannot be served; BGP withdraws it); 'localError'
 * (LocalCheckError) for each membership whose result failed on this host and so left the status as it was;
 * 'checked' (type, result, durationMs) once per probe.
 */
export class HealthMonitor extends EventEmitter {
  private m: Memberships = EMPTY;
  private probes = new Map<string, Probe>();
  private readonly jitter: number;
  private readonly random: () => number;
  private readonly prober: Prober;
  private readonly clock: () => number;
  private readonly maxInFlight: number;
  private readonly startsPerTurn: number;
  private started = false;
  /** Queued probes, earliest first: quick ones, then slow ones (Probe.slow), then settled ones; one timer for all. */
  private quick = new DueQueue<Probe>();
  private slowQueue = new DueQueue<Probe>();
  /**
   * Slow probes whose every membership is down already (a dead backend, marked): their timeouts change
   * nothing, so when slots run short they wait behind slow probes that can still mark a backend down. With
   * 51,200 targets timing out at once they were 26,000 of the 180,000 probes before the last went down, each
   * holding a slot for its whole timeout (a recovered one is found a little later only while slots are short).
   */
  private settledQueue = new DueQueue<Probe>();
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private pumpSoon: NodeJS.Immediate | null = null;
  /**
   * Probes started this event-loop turn, at most startsPerTurn: completions start the next probes at once,
   * and a wave of timeouts would otherwise open thousands of sockets in one turn while /healthz waits.
   */
  private turnStarts = 0;
  private inFlight = 0;
  /** Runs started from the slow queue, at most slowSlots (the rest of the cap is kept for quick probes). */
  private slowInFlight = 0;
  private readonly slowSlots: number;
  /** Inside cancel(): a run's done() then leaves refilling to the canceller (no re-entrant pump). */
  private cancelling = false;
  private idleWaiters: (() => void)[] = [];
  private readonly counts = { started: 0, delayed: 0, delayedByCap: 0, maxLatenessMs: 0 };
  /** When the cap last stopped a due probe (performance.now ms), and since when it has (null: drained). */
  private capBlockedAt = -Infinity;
  private saturatedSince: number | null = null;
  private worstCaseInFlight = 0;
  /** Checks without a verdict since the monitor was made, by reason (an errno code, or "checker": it threw). */
  private readonly localErrorCounts = new Map<string, number>();

  constructor(opts: HealthMonitorOptions = {}) {
    super();
    this.jitter = opts.jitter ?? 0.1;
    if (!(this.jitter >= 0 && this.jitter < 1))
      throw new RangeError(`jitter: ${this.jitter} is not in [0, 1)`);
    this.random = opts.random ?? Math.random;
    if (opts.prober !== undefined && opts.checker !== undefined)
      throw new RangeError('prober, checker: give one of them, not both');
    this.prober = opts.prober ?? (opts.checker ? checkerProber(opts.checker) : defaultProber);
    this.clock = opts.clock ?? Date.now;
    this.maxInFlight = opts.maxInFlight ?? defaultMaxInFlight(null);
    if (!(Number.isInteger(this.maxInFlight) && this.maxInFlight >= 1))
      throw new RangeError(`maxInFlight: ${this.maxInFlight} is not a positive integer`);
    this.slowSlots = this.maxInFlight - quickReserve(this.maxInFlight);
    this.startsPerTurn = opts.startsPerTurn ?? 256;
    if (!(Number.isInteger(this.startsPerTurn) && this.startsPerTurn >= 1))
      throw new RangeError(`startsPerTurn: ${this.startsPerTurn} is not a positive integer`);
  }

  /**
   * Replaces the set of targets: unchanged memberships keep state, changed checks restart counting (status
   * kept); probes whose target stays keep their schedule; a membership new to a probe that already has a
   * result takes the state of a sibling with the same check (what is known of the backend), else its initial.
   */
  setTargets(targets: readonly HealthTarget[]): void {
    const before = this.upByVip();
    const old = this.m;
    const m = new Memberships(targets.length);
    /** Each membership's probe key (a kept one's is its probe's: no string made per membership). */
    const keyOf = new Array<string>(targets.length);
    for (let i = 0; i < targets.length; i++) {
      const t = targets[i]!;
      if (m.index.has(t.key)) throw new RangeError(`targets: key ${JSON.stringify(t.key)} appears twice`);
      m.index.set(t.key, i);
      m.keys[i] = t.key;
      m.vip[i] = m.vipOf(t.vip);
      m.check[i] = t.check;
      keyOf[i] = this.member(t, m, i, old);
    }
    const order = new Array<number>(targets.length);
    for (let i = 0; i < order.length; i++) order[i] = i;
    m.countVips();
    // Before any scheduling: a probe's queue depends on its memberships' statuses (allDown).
    this.m = m;
    const probes = new Map<string, Probe>();
    // Scheduled once this.probes is the new set: schedule() compacts the queues when they hold more than twice
    // the live probes, and against the old set (empty before a reload that adds 51,200 targets) it compacted
    // them at every new probe, quadratic: 26 s in this one event-loop task for 51,200 new targets.
    const toSchedule: { probe: Probe; at: number }[] = [];
    for (const g of groupProbes(
      order,
      (i) => keyOf[i]!,
      (i) => m.check[i]!,
    ).values()) {
      const prev = this.probes.get(g.key);
      const first = targets[g.members[0]!]!;
      const probe: Probe = prev ?? {
        key: g.key,
        target: first,
        members: [],
        slot: 0,
        running: null,
        slow: true,
        lastStart: null,
        live: true,
      };
      const oldInterval = prev?.target.check.intervalMs;
      // The first membership's target itself when it is what is probed (no copy per probe).
      probe.target =
        first.check === g.check && first.initial === undefined
          ? first
          : { key: first.key, vip: first.vip, address: first.address, check: g.check };
      probe.members = g.members;
      for (const i of g.members) m.probe[i] = probe;
      probes.set(g.key, probe);
      if (!this.started || probe.running !== null) continue;
      if (prev === undefined)
        toSchedule.push({ probe, at: performance.now() + this.random() * g.check.intervalMs });
      else if (oldInterval !== g.check.intervalMs && probe.lastStart !== null)
        toSchedule.push({ probe, at: probe.lastStart + g.check.intervalMs });
    }
    this.cancelling = true;
    try {
      for (const [key, p] of this.probes) if (!probes.has(key)) this.cancel(p);
    } finally {
      this.cancelling = false;
    }
    this.probes = probes;
    for (const { probe, at } of toSchedule) this.schedule(probe, at);
    let worst = 0;
    for (const p of probes.values())
      worst += Math.min(1, p.target.check.timeoutMs / p.target.check.intervalMs);
    this.worstCaseInFlight = worst;
    if (this.started) this.refill();
    this.emitAvailability(before);
  }

  /**
   * Fills membership i of `m` for t: kept (same address and check: all its state), restarted (its check or
   * address changed: status, since and counts kept, streaks anew) or new (a sibling's state on its probe
   * when one has a result with the same check, else its initial status). Returns its probe key.
   */
  private member(t: HealthTarget, m: Memberships, i: number, old: Memberships): string {
    const j = old.index.get(t.key);
    if (j !== undefined) {
      const probe = old.probe[j]!;
      const check = old.check[j]!;
      if (probe.target.address === t.address && (check === t.check || sameCheck(check, t.check))) {
        m.copyFrom(i, old, j);
        return probe.key;
      }
    }
    const key = probeKey(t.address, t.check);
    if (j !== undefined) {
      m.copyFrom(i, old, j);
      m.successes[i] = 0;
      m.failures[i] = 0;
      m.fedAt[i] = -Infinity;
      return key;
    }
    const siblings = this.probes.get(key)?.members;
    if (siblings !== undefined)
      for (const k of siblings)
        if (old.last[k] !== null && sameCheck(old.check[k]!, t.check)) {
          m.status[i] = old.status[k]!;
          m.successes[i] = old.successes[k]!;
          m.failures[i] = old.failures[k]!;
          m.fedAt[i] = old.fedAt[k]!;
          return key;
        }
    m.status[i] = statusCode(t.initial ?? 'up');
    return key;
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    for (const p of this.probes.values()) {
      p.live = true;
      this.schedule(p, performance.now() + this.random() * p.target.check.intervalMs);
    }
  }

  /** Stops probing and aborts every probe in flight (their sockets close); idle() resolves once they settled. */
  stop(): void {
    this.started = false;
    this.cancelling = true;
    try {
      for (const p of this.probes.values()) this.cancel(p, false);
    } finally {
      this.cancelling = false;
    }
    this.quick.clear();
    this.slowQueue.clear();
    this.settledQueue.clear();
    this.saturatedSince = null;
    if (this.pumpSoon !== null) clearImmediate(this.pumpSoon);
    this.pumpSoon = null;
    this.arm();
  }

  /** Resolves when no probe is in flight (after stop(): when every aborted probe has settled). */
  idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Status by membership key: the `health` input of desiredState. */
  statuses(): Map<string, HealthStatus> {
    const { keys, status } = this.m;
    const out = new Map<string, HealthStatus>();
    for (let i = 0; i < keys.length; i++) out.set(keys[i]!, STATUS[status[i]!]!);
    return out;
  }

  /**
   * When each target's status last flipped (clock ms), for targets that flipped while monitored: the
   * `healthSince` input of desiredState (a backend down by health check keeps its flows for a grace from then).
   */
  since(): Map<string, number> {
    const { keys, since } = this.m;
    const out = new Map<string, number>();
    for (let i = 0; i < keys.length; i++) if (!Number.isNaN(since[i])) out.set(keys[i]!, since[i]!);
    return out;
  }

  /** Checks that failed on this host since the monitor was made, by reason (monotonic: a Prometheus counter). */
  localErrors(): Map<string, number> {
    return new Map(this.localErrorCounts);
  }

  /** Checked backends up / total per VIP name. */
  availability(): Map<string, VipAvailability> {
    const { vipNames, vipUp, vipTotal } = this.m;
    return new Map(vipNames.map((vip, v) => [vip, { vip, up: vipUp[v]!, total: vipTotal[v]! }]));
  }

  /** Probes, memberships and in-flight figures. */
  stats(): ProbeStats {
    const now = performance.now();
    const a = this.quick.due(now);
    const b = this.slowQueue.due(now);
    const c = this.settledQueue.due(now);
    const earliest = Math.min(a.earliest, b.earliest, c.earliest);
    return {
      probes: this.probes.size,
      memberships: this.m.size,
      inFlight: this.inFlight,
      maxInFlight: this.maxInFlight,
      ...this.counts,
      backlog: a.n + b.n + c.n,
      backlogAgeMs: earliest === Infinity ? 0 : now - earliest,
      worstCaseInFlight: this.worstCaseInFlight,
    };
  }

  /** Per membership: status, counters and the last result (for /state and metrics). */
  snapshot(): TargetSnapshot[] {
    const m = this.m;
    const out = new Array<TargetSnapshot>(m.size);
    for (let i = 0; i < m.size; i++)
      out[i] = {
        key: m.keys[i]!,
        vip: m.vipNames[m.vip[i]!]!,
        address: m.probe[i]!.target.address,
        type: m.check[i]!.type,
        status: STATUS[m.status[i]!]!,
        since: Number.isNaN(m.since[i]) ? null : m.since[i]!,
        successes: m.successes[i]!,
        failures: m.failures[i]!,
        checks: m.checks[i]!,
        failedChecks: m.failedChecks[i]!,
        localErrors: m.localErrors[i]!,
        last: m.last[i]!,
      };
    return out;
  }

  /** Unqueues the probe and cancels its run; gone (`live` false) unless it is only the monitor stopping. */
  private cancel(p: Probe, gone = true): void {
    p.slot++;
    if (gone) p.live = false;
    const run = p.running;
    if (run === null) return;
    run.cancelled = true;
    p.running = null;
    run.cancel?.();
  }

  /**
   * Queues the probe's next start at `at` (performance.now ms; a time past means at once). Absolute, so
   * probes due together keep their order (one timer serves every probe: see arm).
   */
  private schedule(p: Probe, at: number): void {
    p.slot++;
    // Stale slots (cancelled or rescheduled) are dropped lazily; compact when they pile up.
    const queued = this.quick.length + this.slowQueue.length + this.settledQueue.length;
    if (queued > 2 * this.probes.size + 1024) {
      this.quick.compact();
      this.slowQueue.compact();
      this.settledQueue.compact();
    }
    (p.slow ? (this.allDown(p) ? this.settledQueue : this.slowQueue) : this.quick).push(at, p);
    this.arm();
  }

  /** Whether every membership of the probe is down (its timeouts can flip none). */
  private allDown(p: Probe): boolean {
    const status = this.m.status;
    for (let k = 0; k < p.members.length; k++) if (status[p.members[k]!] === UP) return false;
    return true;
  }

  /** Whether a slot is free for a quick probe, and for a slow one (which may not take the quick reserve). */
  private quickFree(): boolean {
    return this.inFlight < this.maxInFlight;
  }

  private slowFree(): boolean {
    return this.inFlight < this.maxInFlight && this.slowInFlight < this.slowSlots;
  }

  /** The queue whose live top is due at `now`: quick first, else slow; null: none due. */
  private dueQueue(now: number): DueQueue<Probe> | null {
    if (this.quick.topAt() <= now) return this.quick;
    if (this.slowQueue.topAt() <= now) return this.slowQueue;
    return this.settledQueue.topAt() <= now ? this.settledQueue : null;
  }

  /** The queue whose due top may start now (a slot free for its lane); null: none. */
  private startable(now: number): DueQueue<Probe> | null {
    if (this.quick.topAt() <= now && this.quickFree()) return this.quick;
    if (!this.slowFree()) return null;
    if (this.slowQueue.topAt() <= now) return this.slowQueue;
    return this.settledQueue.topAt() <= now ? this.settledQueue : null;
  }

  /** After slots freed: start what is due at once, else re-arm. */
  private refill(): void {
    if (this.started && this.pumpSoon === null && this.startable(performance.now()) !== null) this.pump();
    else this.arm();
  }

  /** Arms the single timer for the earliest queued probe (none while the in-flight cap is reached: a completion pumps). */
  private arm(): void {
    // A lane without a free slot needs no timer: a completion pumps.
    const q = this.quickFree() ? this.quick.topAt() : Infinity;
    const s = this.slowFree() ? Math.min(this.slowQueue.topAt(), this.settledQueue.topAt()) : Infinity;
    const next = Math.min(q, s);
    if (next === Infinity || !this.started || this.pumpSoon !== null) {
      if (this.timer !== null) clearTimeout(this.timer);
      this.timer = null;
      this.timerAt = Infinity;
      return;
    }
    if (this.timer !== null && this.timerAt <= next) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timerAt = next;
    this.timer = setTimeout(this.pump, Math.max(0, next - performance.now()));
    this.timer.unref();
  }

  /** Starts due probes, earliest first, up to the in-flight cap and startsPerTurn per turn; then re-arms. */
  private readonly pump = (): void => {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
    this.pumpSoon = null;
    const now = performance.now();
    let due: DueQueue<Probe> | null = null;
    while (this.started && (due = this.dueQueue(now)) !== null) {
      const go = this.startable(now);
      if (go === null) {
        this.blocked(now);
        break;
      }
      if (this.turnStarts >= this.startsPerTurn) {
        this.pumpSoon = setImmediate(this.pump);
        break;
      }
      // The count restarts on the next turn (an immediate queued now runs before a pumpSoon queued later).
      if (this.turnStarts++ === 0) setImmediate(this.newTurn);
      const at = go.topAt();
      this.run(go.pop(), at, now, go !== this.quick);
    }
    if (due === null && this.saturatedSince !== null) this.drained(now);
    this.arm();
  };

  private readonly newTurn = (): void => {
    this.turnStarts = 0;
  };

  /** The cap stopped a due probe at `now`. */
  private blocked(now: number): void {
    this.capBlockedAt = now;
    if (this.saturatedSince !== null) return;
    this.saturatedSince = now;
    this.emitBacklog(true, now, 0);
  }

  /** Nothing due waits any more. */
  private drained(now: number): void {
    const since = this.saturatedSince!;
    this.saturatedSince = null;
    this.emitBacklog(false, since, now - since);
  }

  private emitBacklog(saturated: boolean, since: number, durationMs: number): void {
    const s = this.stats();
    const change: BacklogChange = { saturated, since, durationMs, maxInFlight: this.maxInFlight, backlog: s.backlog, delayedByCap: s.delayedByCap }; // prettier-ignore
    this.emit('backlog', change);
  }

  private run(p: Probe, due: number, now: number, slow: boolean): void {
    const late = now - due;
    if (late > LATE_MS) {
      this.counts.delayed++;
      if (this.capBlockedAt >= due) this.counts.delayedByCap++;
    }
    if (late > this.counts.maxLatenessMs) this.counts.maxLatenessMs = late;
    this.counts.started++;
    this.inFlight++;
    if (slow) this.slowInFlight++;
    const run: Run = { startedAt: now, slow, cancel: null, cancelled: false };
    p.running = run;
    p.lastStart = now;
    let settled = false;
    const done = (result: CheckResult): void => {
      if (settled) return;
      settled = true;
      this.done(p, run, result);
    };
    try {
      run.cancel = this.prober(p.target, done);
    } catch (err) {
      // The prober itself broke, not the backend: no verdict (reported on a later turn: we are inside pump).
      const detail = `check failed: ${(err as Error)?.message ?? err}`;
      queueMicrotask(() => done({ ok: false, durationMs: 0, detail, local: true }));
    }
  }

  private done(p: Probe, run: Run, result: CheckResult): void {
    this.inFlight--;
    if (run.slow) this.slowInFlight--;
    if (p.running === run) p.running = null;
    try {
      // Gone meanwhile, cancelled, or the monitor stopped: drop the result.
      if (p.live && this.started && !run.cancelled) this.apply(p, run.startedAt, result);
    } catch (err) {
      this.emit('error', err);
    } finally {
      if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
      if (!this.cancelling) this.refill();
    }
  }

  /** Fans one probe result out to the memberships due to take it, then queues the probe's next start. */
  private apply(p: Probe, startedAt: number, result: CheckResult): void {
    // Every probe, for the duration histogram (peak_xdp_health_check_duration_seconds); no event object made
    // when nobody listens (a timing-out target's probe is tens of thousands a second).
    if (this.listenerCount('checked') > 0) {
      const outcome = result.local === true ? 'local_error' : result.ok ? 'success' : 'failure';
      this.emit('checked', { type: p.target.check.type, result: outcome, durationMs: result.durationMs });
    }
    const last = lastResult(result, Date.now());
    if (result.local === true) {
      const reason = LOCAL_ERROR_CODES.has(result.detail) ? result.detail : 'checker';
      this.localErrorCounts.set(reason, (this.localErrorCounts.get(reason) ?? 0) + 1);
    }
    // A probe that timed out waits behind quick ones when slots run short (its wall time is no measure: an
    // event loop late to read a connect would make healthy ones look slow).
    if (result.local !== true) p.slow = result.timedOut === true;
    // Every membership's state first, then the events: a listener (which may call setTargets) sees the whole
    // result applied. No allocation per membership: flips are few, and only they are remembered.
    const m = this.m;
    const members = p.members;
    let taken: number[] | null = null;
    for (let k = 0; k < members.length; k++) {
      const i = members[k]!;
      const check = m.check[i]!;
      if (!takesResult(m.fedAt[i]!, startedAt, check.intervalMs, this.jitter)) continue;
      m.fedAt[i] = startedAt;
      m.last[i] = last;
      if (result.local === true) {
        m.localErrors[i] = m.localErrors[i]! + 1;
        (taken ??= []).push(i);
        continue;
      }
      m.checks[i] = m.checks[i]! + 1;
      const successes = result.ok ? m.successes[i]! + 1 : 0;
      const failures = result.ok ? 0 : m.failures[i]! + 1;
      if (!result.ok) m.failedChecks[i] = m.failedChecks[i]! + 1;
      m.successes[i] = successes;
      m.failures[i] = failures;
      const from = STATUS[m.status[i]!]!;
      const to = statusAfter(from, successes, failures, check);
      if (to === from) continue;
      m.status[i] = statusCode(to);
      m.since[i] = this.clock();
      m.vipUp[m.vip[i]!] = m.vipUp[m.vip[i]!]! + (to === 'up' ? 1 : -1);
      (taken ??= []).push(i);
    }
    // The next start counts from this one's start, not its end: a probe that timed out keeps its cadence.
    const next = startedAt + jittered(p.target.check.intervalMs, this.jitter, this.random());
    this.schedule(p, next);
    if (taken === null) return;
    if (result.local === true) for (const i of taken) this.noVerdict(m, i, result);
    else this.flipped(m, taken, result);
  }

  /**
   * Tells the flips of one result (`flips`: memberships, in fan-out order, whose status changed): a 'change'
   * each, and a 'vip' for each VIP whose count of up backends went between zero and non-zero by it.
   */
  private flipped(m: Memberships, flips: readonly number[], result: CheckResult): void {
    // The up counts before this result: replayed flip by flip, so each VIP's crossing is told where it fell.
    const up = new Map<number, number>();
    for (const i of flips) {
      const v = m.vip[i]!;
      up.set(v, (up.get(v) ?? m.vipUp[v]!) + (m.status[i] === UP ? -1 : 1));
    }
    for (const i of flips) {
      const to = STATUS[m.status[i]!]!;
      const from: HealthStatus = to === 'up' ? 'down' : 'up';
      const v = m.vip[i]!;
      const vip = m.vipNames[v]!;
      const change: HealthChange = { key: m.keys[i]!, vip, address: m.probe[i]!.target.address, from, to, result }; // prettier-ignore
      this.emit('change', change);
      const was = up.get(v)!;
      const now = was + (to === 'up' ? 1 : -1);
      up.set(v, now);
      // Only a VIP's change between zero and non-zero up backends is an event.
      if ((was === 0) !== (now === 0)) this.emit('vip', { vip, up: now, total: m.vipTotal[v]! });
    }
  }

  /**
   * A check that failed on this host (out of fds, buffers, ports; or the checker threw): the status and the
   * rise/fall streaks stay as they were, so a loaded balancer host does not take its healthy backends out.
   */
  private noVerdict(m: Memberships, i: number, result: CheckResult): void {
    const ev: LocalCheckError = { key: m.keys[i]!, vip: m.vipNames[m.vip[i]!]!, address: m.probe[i]!.target.address, result }; // prettier-ignore
    this.emit('localError', ev);
  }

  /** Up backends per VIP name now (for emitAvailability after a change of targets). */
  private upByVip(): Map<string, number> {
    const { vipNames, vipUp } = this.m;
    return new Map(vipNames.map((vip, v) => [vip, vipUp[v]!]));
  }

  private emitAvailability(before: Map<string, number>): void {
    const { vipNames, vipUp, vipTotal } = this.m;
    for (let v = 0; v < vipNames.length; v++) {
      const up = before.get(vipNames[v]!);
      if (up === undefined || (up === 0) !== (vipUp[v] === 0))
        this.emit('vip', { vip: vipNames[v]!, up: vipUp[v]!, total: vipTotal[v]! });
    }
  }
}
