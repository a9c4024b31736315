// HealthMonitor: one probe per distinct target (probes.ts probeKey) shared by every membership that checks
// it, on jittered schedules (two queues, one timer), a bounded number in flight; results fan out to each
// membership's own rise/fall state, and state changes are emitted per membership.
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
import { defaultMaxInFlight, groupProbes, jittered, probeKey, quickReserve, takesResult } from './probes';
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
   * quick ones (their last run did not time out) first, then slow ones, each earliest due first.
   */
  maxInFlight?: number;
  /** Probes started per event-loop turn at most (default 256): a due burst never holds the loop for long. */
  startsPerTurn?: number;
}

/** A probe starting this much after its due time counts as delayed (timers and turns take a few ms). */
export const LATE_MS = 50;

interface Member {
  target: HealthTarget;
  /** probeKey of its address and check (cached: setTargets runs on every sync). */
  probeKey: string;
  state: HealthState;
  /** When state.status last flipped (clock ms); null: never while monitored. */
  since: number | null;
  checks: number;
  failedChecks: number;
  localErrors: number;
  last: (CheckResult & { at: number }) | null;
  /** Start (performance.now ms) of the probe whose result it last took; -Infinity: none yet. */
  fedAt: number;
}

/** One run of a probe. */
interface Run {
  startedAt: number;
  /** Started from the slow queue (counted in slowInFlight). */
  slow: boolean;
  cancel: CancelProbe | null;
  /** Cancelled (target gone, monitor stopped): its result is dropped. */
  cancelled: boolean;
}

interface Probe {
  key: string;
  /** Its first membership's target at the probe's interval: what the checker gets. */
  target: HealthTarget;
  members: Member[];
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

/** A queued probe: due time (performance.now ms), the probe and its slot then. */
interface Queued {
  at: number;
  /** Queueing order: probes due at the same time start in the order they were queued. */
  seq: number;
  probe: Probe;
  slot: number;
}

/** Whether a is due before b (equal times: queued first). */
const dueBefore = (a: Queued, b: Queued): boolean => a.at < b.at || (a.at === b.at && a.seq < b.seq);

function siftDown(h: Queued[], i: number): void {
  const x = h[i]!;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= h.length) break;
    const r = l + 1;
    const m = r < h.length && dueBefore(h[r]!, h[l]!) ? r : l;
    if (!dueBefore(h[m]!, x)) break;
    h[i] = h[m]!;
    i = m;
  }
  h[i] = x;
}

function heapPush(h: Queued[], q: Queued): void {
  let i = h.length;
  h.push(q);
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (!dueBefore(q, h[p]!)) break;
    h[i] = h[p]!;
    i = p;
  }
  h[i] = q;
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

/** Drops stale entries (cancelled or rescheduled probes) from the top; the top then is live or none. */
function liveTop(h: Queued[]): Queued | undefined {
  while (h.length > 0 && h[0]!.slot !== h[0]!.probe.slot) heapPop(h);
  return h[0];
}

/** Live entries due by `now`, and the earliest due time among them (Infinity: none); O(due + stale). */
function dueIn(h: Queued[], now: number): { n: number; earliest: number } {
  let n = 0;
  let earliest = Infinity;
  const stack = h.length > 0 ? [0] : [];
  while (stack.length > 0) {
    const i = stack.pop()!;
    const q = h[i]!;
    if (q.at > now) continue; // the heap's order: nothing below is due either
    if (q.slot === q.probe.slot) {
      n++;
      if (q.at < earliest) earliest = q.at;
    }
    if (2 * i + 1 < h.length) stack.push(2 * i + 1);
    if (2 * i + 2 < h.length) stack.push(2 * i + 2);
  }
  return { n, earliest };
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
 * Events: 'change' (HealthChange) when a membership flips; 'vip' (VipAvailability) when a VIP's count of
 * up backends changes between zero and non-zero (0 up = cannot be served; BGP withdraws it); 'localError'
 * (LocalCheckError) for each membership whose result failed on this host and so left the status as it was;
 * 'checked' (type, result, durationMs) once per probe.
 */
export class HealthMonitor extends EventEmitter {
  private members = new Map<string, Member>();
  private probes = new Map<string, Probe>();
  /** Up / total per VIP name, kept current so a result costs O(memberships of the probe), not O(targets). */
  private perVip = new Map<string, VipAvailability>();
  private readonly jitter: number;
  private readonly random: () => number;
  private readonly prober: Prober;
  private readonly clock: () => number;
  private readonly maxInFlight: number;
  private readonly startsPerTurn: number;
  private started = false;
  /** Queued probes, earliest first (binary heaps): quick ones, then slow ones (Probe.slow); one timer for both. */
  private quick: Queued[] = [];
  private slowQueue: Queued[] = [];
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private pumpSoon: NodeJS.Immediate | null = null;
  /**
   * Probes started this event-loop turn, at most startsPerTurn: completions start the next probes at once,
   * and a wave of timeouts would otherwise open thousands of sockets in one turn while /healthz waits.
   */
  private turnStarts = 0;
  private seq = 0;
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
    const before = this.availability();
    const members = new Map<string, Member>();
    for (const t of targets) {
      if (members.has(t.key)) throw new RangeError(`targets: key ${JSON.stringify(t.key)} appears twice`);
      members.set(t.key, this.member(t));
    }
    const probes = new Map<string, Probe>();
    for (const g of groupProbes(
      [...members.values()],
      (m) => m.probeKey,
      (m) => m.target.check,
    ).values()) {
      const old = this.probes.get(g.key);
      const probe: Probe = old ?? {
        key: g.key,
        target: g.members[0]!.target,
        members: [],
        slot: 0,
        running: null,
        slow: true,
        lastStart: null,
        live: true,
      };
      const oldInterval = old?.target.check.intervalMs;
      probe.target = { ...g.members[0]!.target, check: g.check };
      probe.members = g.members;
      probes.set(g.key, probe);
      if (!this.started || probe.running !== null) continue;
      if (old === undefined) this.schedule(probe, performance.now() + this.random() * g.check.intervalMs);
      else if (oldInterval !== g.check.intervalMs && probe.lastStart !== null)
        this.schedule(probe, probe.lastStart + g.check.intervalMs);
    }
    this.cancelling = true;
    try {
      for (const [key, p] of this.probes) if (!probes.has(key)) this.cancel(p);
    } finally {
      this.cancelling = false;
    }
    this.members = members;
    this.probes = probes;
    let worst = 0;
    for (const p of probes.values())
      worst += Math.min(1, p.target.check.timeoutMs / p.target.check.intervalMs);
    this.worstCaseInFlight = worst;
    if (this.started) this.refill();
    const perVip = new Map<string, VipAvailability>();
    for (const m of members.values()) {
      const a = perVip.get(m.target.vip) ?? { vip: m.target.vip, up: 0, total: 0 };
      a.total++;
      if (m.state.status === 'up') a.up++;
      perVip.set(m.target.vip, a);
    }
    this.perVip = perVip;
    this.emitAvailability(before);
  }

  /** The membership for t: kept, restarted (its check changed) or new (from a sibling on its probe, else initial). */
  private member(t: HealthTarget): Member {
    const old = this.members.get(t.key);
    if (
      old !== undefined &&
      old.target.address === t.address &&
      (old.target.check === t.check || sameCheck(old.target.check, t.check))
    ) {
      old.target = t;
      return old;
    }
    const key = probeKey(t.address, t.check);
    if (old === undefined) {
      const sibling = this.probes
        .get(key)
        ?.members.find((m) => m.last !== null && sameCheck(m.target.check, t.check));
      if (sibling !== undefined)
        return { ...fresh(t, key, sibling.state.status), state: { ...sibling.state }, fedAt: sibling.fedAt };
    }
    return {
      ...fresh(t, key, old?.state.status ?? t.initial ?? 'up'),
      since: old?.since ?? null,
      checks: old?.checks ?? 0,
      failedChecks: old?.failedChecks ?? 0,
      localErrors: old?.localErrors ?? 0,
      last: old?.last ?? null,
    };
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
    this.quick.length = 0;
    this.slowQueue.length = 0;
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
    const out = new Map<string, HealthStatus>();
    for (const [k, m] of this.members) out.set(k, m.state.status);
    return out;
  }

  /**
   * When each target's status last flipped (clock ms), for targets that flipped while monitored: the
   * `healthSince` input of desiredState (a backend down by health check keeps its flows for a grace from then).
   */
  since(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [k, m] of this.members) if (m.since !== null) out.set(k, m.since);
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

  /** Probes, memberships and in-flight figures. */
  stats(): ProbeStats {
    const now = performance.now();
    const a = dueIn(this.quick, now);
    const b = dueIn(this.slowQueue, now);
    const earliest = Math.min(a.earliest, b.earliest);
    return {
      probes: this.probes.size,
      memberships: this.members.size,
      inFlight: this.inFlight,
      maxInFlight: this.maxInFlight,
      ...this.counts,
      backlog: a.n + b.n,
      backlogAgeMs: earliest === Infinity ? 0 : now - earliest,
      worstCaseInFlight: this.worstCaseInFlight,
    };
  }

  /** Per membership: status, counters and the last result (for /state and metrics). */
  snapshot(): TargetSnapshot[] {
    const out: TargetSnapshot[] = [];
    for (const m of this.members.values())
      out.push({
        key: m.target.key,
        vip: m.target.vip,
        address: m.target.address,
        type: m.target.check.type,
        status: m.state.status,
        since: m.since,
        successes: m.state.successes,
        failures: m.state.failures,
        checks: m.checks,
        failedChecks: m.failedChecks,
        localErrors: m.localErrors,
        last: m.last,
      });
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
    if (this.quick.length + this.slowQueue.length > 2 * this.probes.size + 1024) {
      heapify((this.quick = this.quick.filter((q) => q.slot === q.probe.slot)));
      heapify((this.slowQueue = this.slowQueue.filter((q) => q.slot === q.probe.slot)));
    }
    heapPush(p.slow ? this.slowQueue : this.quick, { at, seq: this.seq++, probe: p, slot: p.slot });
    this.arm();
  }

  /** Whether a slot is free for a quick probe, and for a slow one (which may not take the quick reserve). */
  private quickFree(): boolean {
    return this.inFlight < this.maxInFlight;
  }

  private slowFree(): boolean {
    return this.inFlight < this.maxInFlight && this.slowInFlight < this.slowSlots;
  }

  /** The queue whose live top is due at `now`: quick first, else slow; null: none due. */
  private dueQueue(now: number): Queued[] | null {
    const q = liveTop(this.quick);
    if (q !== undefined && q.at <= now) return this.quick;
    const s = liveTop(this.slowQueue);
    return s !== undefined && s.at <= now ? this.slowQueue : null;
  }

  /** The queue whose due top may start now (a slot free for its lane); null: none. */
  private startable(now: number): Queued[] | null {
    const q = liveTop(this.quick);
    if (q !== undefined && q.at <= now && this.quickFree()) return this.quick;
    const s = liveTop(this.slowQueue);
    return s !== undefined && s.at <= now && this.slowFree() ? this.slowQueue : null;
  }

  /** After slots freed: start what is due at once, else re-arm. */
  private refill(): void {
    if (this.started && this.pumpSoon === null && this.startable(performance.now()) !== null) this.pump();
    else this.arm();
  }

  /** Arms the single timer for the earliest queued probe (none while the in-flight cap is reached: a completion pumps). */
  private arm(): void {
    // A lane without a free slot needs no timer: a completion pumps.
    const q = this.quickFree() ? liveTop(this.quick) : undefined;
    const s = this.slowFree() ? liveTop(this.slowQueue) : undefined;
    const next = q === undefined || (s !== undefined && s.at < q.at) ? s : q;
    if (next === undefined || !this.started || this.pumpSoon !== null) {
      if (this.timer !== null) clearTimeout(this.timer);
      this.timer = null;
      this.timerAt = Infinity;
      return;
    }
    if (this.timer !== null && this.timerAt <= next.at) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timerAt = next.at;
    this.timer = setTimeout(this.pump, Math.max(0, next.at - performance.now()));
    this.timer.unref();
  }

  /** Starts due probes, earliest first, up to the in-flight cap and startsPerTurn per turn; then re-arms. */
  private readonly pump = (): void => {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
    this.pumpSoon = null;
    const now = performance.now();
    let due: Queued[] | null = null;
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
      const q = heapPop(go)!;
      this.run(q.probe, q.at, now, go === this.slowQueue);
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
    // Every probe, for the duration histogram (peak_xdp_health_check_duration_seconds).
    const outcome = result.local === true ? 'local_error' : result.ok ? 'success' : 'failure';
    this.emit('checked', { type: p.target.check.type, result: outcome, durationMs: result.durationMs });
    const last = { ...result, at: Date.now() };
    if (result.local === true) {
      const reason = LOCAL_ERROR_CODES.has(result.detail) ? result.detail : 'checker';
      this.localErrorCounts.set(reason, (this.localErrorCounts.get(reason) ?? 0) + 1);
    }
    // A probe that timed out waits behind quick ones when slots run short (its wall time is no measure: an
    // event loop late to read a connect would make healthy ones look slow).
    if (result.local !== true) p.slow = result.timedOut === true;
    for (const m of p.members) {
      if (!takesResult(m.fedAt, startedAt, m.target.check.intervalMs, this.jitter)) continue;
      m.fedAt = startedAt;
      m.last = last;
      if (result.local === true) {
        this.noVerdict(m, result);
        continue;
      }
      m.checks++;
      if (!result.ok) m.failedChecks++;
      const { state, changed } = nextHealth(m.state, result.ok, m.target.check);
      const from = m.state.status;
      m.state = state;
      if (changed) this.flipped(m, from, result);
    }
    // The next start counts from this one's start, not its end: a probe that timed out keeps its cadence.
    const next = startedAt + jittered(p.target.check.intervalMs, this.jitter, this.random());
    this.schedule(p, next);
  }

  private flipped(m: Member, from: HealthStatus, result: CheckResult): void {
    m.since = this.clock();
    const t = m.target;
    const change: HealthChange = { key: t.key, vip: t.vip, address: t.address, from, to: m.state.status, result }; // prettier-ignore
    this.emit('change', change);
    const a = this.perVip.get(t.vip);
    if (a !== undefined) {
      const wasZero = a.up === 0;
      a.up += m.state.status === 'up' ? 1 : -1;
      // Only a VIP's change between zero and non-zero up backends is an event.
      if (wasZero !== (a.up === 0)) this.emit('vip', { ...a });
    }
  }

  /**
   * A check that failed on this host (out of fds, buffers, ports; or the checker threw): the status and the
   * rise/fall streaks stay as they were, so a loaded balancer host does not take its healthy backends out.
   */
  private noVerdict(m: Member, result: CheckResult): void {
    m.localErrors++;
    const ev: LocalCheckError = { key: m.target.key, vip: m.target.vip, address: m.target.address, result };
    this.emit('localError', ev);
  }

  private emitAvailability(before: Map<string, VipAvailability>): void {
    const after = this.availability();
    for (const [vip, a] of after) {
      const b = before.get(vip);
      if (b === undefined || (b.up === 0) !== (a.up === 0)) this.emit('vip', a);
    }
  }
}

/** A membership with no history: `status`, no streaks, no counts. */
const fresh = (target: HealthTarget, probeKey: string, status: HealthStatus): Member => ({
  target,
  probeKey,
  state: initialHealth(status),
  since: null,
  checks: 0,
  failedChecks: 0,
  localErrors: 0,
  last: null,
  fedAt: -Infinity,
});
