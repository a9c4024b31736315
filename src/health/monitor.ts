// HealthMonitor: one probe per distinct target (probes.ts probeKey) shared by every membership that checks
// it, on jittered schedules (three lanes of one DueLanes, one timer), a bounded number in flight; results fan out to each
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
  tcpProbeThread,
  ThreadProbes,
} from './checks';
import { isIPv4, isIPv6 } from 'node:net';
import { StringIndex } from '../util/string-index';
import { DueLanes, resized, roomFor } from './due-queue';
import { defaultMaxInFlight, jittered, probeCheck, probeCheckKey, quickReserve, takesResult } from './probes';
import { HealthChangeLog, HealthStatus, NEW_TARGET_STATUS, statusAfter } from './state';

export interface HealthTarget {
  /** Membership key (DesiredBackend.key): what desiredState looks health up by. */
  key: string;
  /** VIP name, for per-VIP reporting. */
  vip: string;
  address: string;
  check: HealthCheckConfig;
  /** Status before the first result (default NEW_TARGET_STATUS). */
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

/** What the per-backend health metrics read of a membership (TargetSnapshot without its times and last result). */
export type TargetCounts = Pick<
  TargetSnapshot,
  'key' | 'vip' | 'address' | 'type' | 'status' | 'checks' | 'failedChecks'
>;

/** The probing side, for metrics and benchmarks. */
export interface ProbeStats {
  /** Distinct probes (memberships sharing a target share one). */
  probes: number;
  memberships: number;
  inFlight: number;
  maxInFlight: number;
  /** Probes started since the monitor was made. */
  started: number;
  /** Of those, TCP probes started on the addon's prober thread without a target object or callbacks of their own
   * (the default prober, an IP address, the thread available: see ThreadProbes.begin). */
  startedOnThread: number;
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

/** One probe's result ('checked'; made only while something listens). */
export interface ProbeChecked {
  type: HealthCheckConfig['type'];
  result: 'success' | 'failure' | 'local_error';
  durationMs: number;
  address: string;
  /** When the probe started (performance.now ms; whole ms on the prober thread's path). */
  startedAt: number;
  timedOut: boolean;
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
  /** Each interval is scaled by 1 ± jitter (uniform); default DEFAULT_JITTER. The first check waits U(0, interval). */
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

/** HealthMonitorOptions.jitter's default: each interval scaled by 1 ± 0.1. */
export const DEFAULT_JITTER = 0.1;

/** setTargets and updateTargets given in pieces (one change over several event-loop turns). */
export interface PieceOptions {
  /** More pieces of this change follow: what is sized for the whole change (the probe queues' room) is left to the
   * last piece. */
  more?: boolean;
}

/** A membership's last result as snapshot() shows it. */
type LastResult = CheckResult & { at: number };

/** Bits of Memberships.lastFlags: what a result said (ok, timedOut, local) and which optional fields it had. */
const LAST_OK = 1;
const LAST_TIMED_OUT = 2;
const LAST_HAS_TIMED_OUT = 4;
const LAST_LOCAL = 8;
const LAST_HAS_LOCAL = 16;

/** A result's lastFlags. */
function lastFlags(r: CheckResult): number {
  let f = r.ok ? LAST_OK : 0;
  if (r.timedOut !== undefined) f |= LAST_HAS_TIMED_OUT | (r.timedOut ? LAST_TIMED_OUT : 0);
  if (r.local !== undefined) f |= LAST_HAS_LOCAL | (r.local ? LAST_LOCAL : 0);
  return f;
}

/** Status codes of Memberships.status. */
const UP = 0;
const DOWN = 1;
const STATUS: readonly HealthStatus[] = ['up', 'down'];
const statusCode = (s: HealthStatus): number => (s === 'up' ? UP : DOWN);
/** The status of a key without a target (see Memberships' log). */
const NEW_TARGET_CODE = statusCode(NEW_TARGET_STATUS);
/** Keys a change log holds at most: past it, it starts again (a reader older than that diffs every entry). */
export const CHANGE_LOG_MAX = 65536;

/**
 * Every membership's state as columns indexed by slot, and per-VIP counts. At 512 x 100 an object per membership
 * (with a state object, its target and its probe key string) held ~360 B of heap and every result allocated a
 * state per membership; columns hold ~120 B and a result allocates none. Slots are taken at the end and freed one by
 * one, so a change of targets costs what it changes (a freed slot has no key) and the memberships keep their order
 * (statuses() lists them in it: desiredState diffs it in one pass); compact() packs them once half are free.
 */
type TypedColumn =
  | 'status'
  | 'successes'
  | 'failures'
  | 'since'
  | 'checks'
  | 'failedChecks'
  | 'localErrors'
  | 'fedAt'
  | 'lastAt'
  | 'lastMs'
  | 'lastFlags'
  | 'stamp'
  | 'probe'
  | 'vip';

/** Memberships' typed columns, `vip` last (capacity() is its length: see growOne). */
const TYPED_COLUMNS: readonly TypedColumn[] = ['status', 'successes', 'failures', 'since', 'checks', 'failedChecks', 'localErrors', 'fedAt', 'lastAt', 'lastMs', 'lastFlags', 'stamp', 'probe', 'vip']; // prettier-ignore

type TypedArray = Int32Array | Uint8Array | Uint32Array | Float64Array;

/** A copy of `a` with room for `n` (n >= its length). */
function grownTo<A extends TypedArray>(a: A, n: number): A {
  const b = new (a.constructor as new (n: number) => A)(n);
  b.set(a);
  return b;
}

class Memberships {
  /**
   * Membership key -> slot, or a placeholder -1 - n for upsert n of the change running (HealthMonitor.change): a
   * StringIndex over the keys column, 8 MB at 512,000 memberships where a Map was ~20 MB (and V8's rehash of a Map at
   * 262,144 keys held a piece of the start's targets 45-70 ms).
   */
  readonly index = new StringIndex((v) => (v >= 0 ? this.keys[v]! : (this.pending[-1 - v]?.key ?? '')));
  /** The upserts of the change running, while their keys have placeholders in the index. */
  pending: readonly HealthTarget[] = [];
  /** undefined: a free slot. */
  keys: (string | undefined)[] = [];
  /** Index into vipNames. */
  vip = new Int32Array(0);
  /** Its probe's id (HealthMonitor's ProbeColumns: the lanes' id; renumbered with them); -1: a free slot. */
  probe = new Int32Array(0);
  check: (HealthCheckConfig | undefined)[] = [];
  /** UP or DOWN. */
  status = new Uint8Array(0);
  /** Consecutive successes, failures (the streaks of state.ts). */
  successes = new Uint32Array(0);
  failures = new Uint32Array(0);
  /** When the status last flipped (clock ms); NaN: not while monitored. */
  since = new Float64Array(0);
  /**
   * Checks taken, failed, and failed on this host, per membership: 4 bytes each (8 as Float64: 6.6 MB more at
   * 512,000). A count wraps at 2^32, ~13 years of checks at the shortest interval (100 ms).
   */
  checks = new Uint32Array(0);
  failedChecks = new Uint32Array(0);
  localErrors = new Uint32Array(0);
  /** Start (performance.now ms) of the probe whose result it last took; -Infinity: none yet. */
  fedAt = new Float64Array(0);
  /**
   * The last result taken, in columns (an object per result with two boxed numbers and its detail was ~130 B per
   * membership once every probe had run: 66 MB at 512,000, and as many objects for every full collection to mark):
   * when (clock ms; NaN: none yet), its duration, lastFlags, and its detail.
   */
  lastAt = new Float64Array(0);
  lastMs = new Float64Array(0);
  lastFlags = new Uint8Array(0);
  lastDetail: (string | undefined)[] = [];
  /** The change of targets (HealthMonitor.epoch) that last gave it. */
  stamp = new Int32Array(0);
  /** Slots in use: every live slot is below it. */
  top = 0;
  /** Live memberships. */
  count = 0;
  readonly vipNames: string[] = [];
  readonly vipIndex = new Map<string, number>();
  /** Checked backends up, and in all, per VIP (by vip index; kept current: a result costs O(its memberships)). */
  vipUp = new Int32Array(0);
  vipTotal = new Int32Array(0);
  /**
   * Keys whose status changed, or that came or went with a status other than NEW_TARGET_STATUS, in order: versions
   * logBase .. version - 1. What desiredState diffs health by (StatusView.changesSince): a sync at 512,000
   * memberships passed over every one (~20 ms) to find a handful. A key without a target counts as
   * NEW_TARGET_STATUS, as the desired state takes it for a checked VIP (the targets are set from a desired state
   * that already shows it), so a key coming or going with that status changes nothing there: logging the start's
   * 512,000 targets overran the log, and the first change after it compared every membership (~230 ms). Starts
   * again past CHANGE_LOG_MAX.
   */
  private log: string[] = [];
  private logBase = 0;

  get version(): number {
    return this.logBase + this.log.length;
  }

  private logKey(key: string): void {
    if (this.log.length >= CHANGE_LOG_MAX) {
      this.logBase += this.log.length;
      this.log = [];
    }
    this.log.push(key);
  }

  /** The keys logged from version `from` up to `to`; null when the log no longer reaches back to `from`. */
  changes(from: number, to: number): readonly string[] | null {
    if (from < this.logBase || to < from || to > this.version) return null;
    return this.log.slice(from - this.logBase, to - this.logBase);
  }

  /** Room for `n` more memberships without growing again (and what reserveAhead promised). */
  reserve(n: number): void {
    this.index.reserve(this.count + n);
    if (this.top + n <= this.capacity()) return;
    const cap = Math.max(this.roomFor(n), this.#want);
    const cols = this.typedColumns();
    for (const c of TYPED_COLUMNS) if (cols[c].length < cap) cols[c] = grownTo(cols[c], cap);
    if (this.#want <= cap) this.#want = 0;
  }

  /**
   * By an eighth, not double: at 512,000 memberships doubling for one more was ~50 MB of new buffers, and that much
   * new external memory made V8 collect the whole heap (~0.4 s of the first change after a start). Room for many at
   * once (HealthMonitor.reserve, a start's targets) gets a 32nd and 1,024 more: exactly as many made the next one added
   * grow every column again (81 ms at 512,000), and an eighth was ~4 MB unused there (the mass flip's heap snapshot).
   */
  private roomFor(n: number): number {
    const need = this.top + n;
    return Math.max(16, need + (need >> 5) + 1024, this.capacity() + (this.capacity() >> 3) + 1024);
  }

  /** The typed columns by name (one type for all: each keeps its own array type, grownTo copies it). */
  private typedColumns(): Record<TypedColumn, TypedArray> {
    return this as unknown as Record<TypedColumn, TypedArray>;
  }

  /** Room wanted ahead (reserveAhead), made by growOne() a column at a time, or at once by the next reserve(). */
  #want = 0;

  /** As reserve(n), but nothing is made now: growOne() makes it a column at a time (or the next reserve() at once). */
  reserveAhead(n: number): void {
    if (this.top + n > this.capacity()) this.#want = Math.max(this.#want, this.roomFor(n));
    this.#wantKeys = Math.max(this.#wantKeys, this.count + n);
  }

  /** Keys the index is to have room for (reserveAhead), made by growOne() after the columns. */
  #wantKeys = 0;

  /**
   * Makes one column of the room reserveAhead promised: a typed column (vip last: capacity() is its length, so it
   * shows the room only once every typed column has it), then an object column (keys, check, lastDetail: written
   * past their end one slot at a time they grow themselves, all in the same write, 35-75 ms in one piece of a
   * 512,000-target start), then the index's room for the keys (~12 ms at 2^20 entries). False when every column has
   * it. Each is new memory: at 577,000 slots ~2-5 MB, a few ms to touch on this VM, ~45 ms for all of them in one turn.
   */
  growOne(): boolean {
    const want = this.#want;
    if (want > 0) {
      const cols = this.typedColumns();
      for (const c of TYPED_COLUMNS)
        if (cols[c].length < want) {
          cols[c] = grownTo(cols[c], want);
          return true;
        }
      this.#want = 0;
    }
    const cap = this.capacity();
    const top = this.top;
    if (this.keys.length < cap) this.keys = roomFor(this.keys, cap, top);
    else if (this.check.length < cap) this.check = roomFor(this.check, cap, top);
    else if (this.lastDetail.length < cap) this.lastDetail = roomFor(this.lastDetail, cap, top);
    else {
      const keys = this.#wantKeys;
      this.#wantKeys = 0;
      return this.index.reserve(keys);
    }
    return true;
  }

  capacity(): number {
    return this.vip.length;
  }

  vipOf(name: string): number {
    let v = this.vipIndex.get(name);
    if (v === undefined) {
      v = this.vipNames.push(name) - 1;
      this.vipIndex.set(name, v);
      if (v >= this.vipUp.length) {
        const up = new Int32Array(Math.max(16, 2 * v));
        const total = new Int32Array(up.length);
        up.set(this.vipUp);
        total.set(this.vipTotal);
        this.vipUp = up;
        this.vipTotal = total;
      }
    }
    return v;
  }

  /** The slot of membership `key`; undefined for a key that is none (or only a placeholder of a change running). */
  slotOf(key: string): number | undefined {
    const i = this.index.get(key);
    return i === undefined || i < 0 ? undefined : i;
  }

  /** A fresh slot for `key` of VIP `v` (state zero, status `status`, never flipped), after every other. */
  take(key: string, v: number, check: HealthCheckConfig, status: number, stamp: number): number {
    this.reserve(1);
    const i = this.top++;
    this.count++;
    this.index.set(key, i);
    this.keys[i] = key;
    this.vip[i] = v;
    this.check[i] = check;
    this.status[i] = status;
    this.successes[i] = 0;
    this.failures[i] = 0;
    this.since[i] = NaN;
    this.checks[i] = 0;
    this.failedChecks[i] = 0;
    this.localErrors[i] = 0;
    this.fedAt[i] = -Infinity;
    this.lastAt[i] = NaN;
    this.lastDetail[i] = undefined;
    this.stamp[i] = stamp;
    this.probe[i] = -1;
    this.vipTotal[v] = this.vipTotal[v]! + 1;
    if (status === UP) this.vipUp[v] = this.vipUp[v]! + 1;
    if (status !== NEW_TARGET_CODE) this.logKey(key);
    return i;
  }

  /** Frees slot i (its probe's members still list it: the caller filters them). */
  release(i: number): void {
    const v = this.vip[i]!;
    this.vipTotal[v] = this.vipTotal[v]! - 1;
    if (this.status[i] === UP) this.vipUp[v] = this.vipUp[v]! - 1;
    if (this.status[i] !== NEW_TARGET_CODE) this.logKey(this.keys[i]!);
    this.index.delete(this.keys[i]!);
    this.keys[i] = undefined;
    this.probe[i] = -1;
    this.check[i] = undefined;
    this.lastDetail[i] = undefined;
    this.count--;
  }

  /** Membership i took a result (`flags`: lastFlags) at `at` (clock ms). */
  setLast(i: number, at: number, durationMs: number, flags: number, detail: string): void {
    this.lastAt[i] = at;
    this.lastMs[i] = durationMs;
    this.lastFlags[i] = flags;
    this.lastDetail[i] = detail;
  }

  /** Whether membership i took a result yet. */
  hasLast(i: number): boolean {
    return !Number.isNaN(this.lastAt[i]);
  }

  /** Membership i's last result as an object (made now); null: none yet. */
  lastOf(i: number): LastResult | null {
    if (!this.hasLast(i)) return null;
    const f = this.lastFlags[i]!;
    const last: LastResult = { ok: (f & LAST_OK) !== 0, durationMs: this.lastMs[i]!, detail: this.lastDetail[i]!, at: this.lastAt[i]! }; // prettier-ignore
    if ((f & LAST_HAS_TIMED_OUT) !== 0) last.timedOut = (f & LAST_TIMED_OUT) !== 0;
    if ((f & LAST_HAS_LOCAL) !== 0) last.local = (f & LAST_LOCAL) !== 0;
    return last;
  }

  /** Moves membership i to VIP v (a VIP renamed over the same address). */
  moveVip(i: number, v: number): void {
    const w = this.vip[i]!;
    this.vipTotal[w] = this.vipTotal[w]! - 1;
    this.vipTotal[v] = this.vipTotal[v]! + 1;
    if (this.status[i] === UP) {
      this.vipUp[w] = this.vipUp[w]! - 1;
      this.vipUp[v] = this.vipUp[v]! + 1;
    }
    this.vip[i] = v;
  }

  /** Sets membership i's status, keeping the VIP's up count. */
  setStatus(i: number, status: number): void {
    if (this.status[i] === status) return;
    const v = this.vip[i]!;
    this.vipUp[v] = this.vipUp[v]! + (status === UP ? 1 : -1);
    this.status[i] = status;
    this.logKey(this.keys[i]!);
  }

  /**
   * The live memberships into slots 0..count-1, in their order, once at most half of the slots in use is live
   * (amortised O(1) per removal). Returns the old slot -> new slot map (null: nothing moved); the caller renumbers
   * its probes' members.
   */
  compact(): Int32Array | null {
    if (this.top <= 1024 || this.count * 2 > this.top) return null;
    const to = new Int32Array(this.top).fill(-1);
    let n = 0;
    for (let i = 0; i < this.top; i++) {
      if (this.keys[i] === undefined) continue;
      to[i] = n;
      if (n !== i) {
        this.keys[n] = this.keys[i];
        this.vip[n] = this.vip[i]!;
        this.probe[n] = this.probe[i]!;
        this.check[n] = this.check[i];
        this.status[n] = this.status[i]!;
        this.successes[n] = this.successes[i]!;
        this.failures[n] = this.failures[i]!;
        this.since[n] = this.since[i]!;
        this.checks[n] = this.checks[i]!;
        this.failedChecks[n] = this.failedChecks[i]!;
        this.localErrors[n] = this.localErrors[i]!;
        this.fedAt[n] = this.fedAt[i]!;
        this.lastAt[n] = this.lastAt[i]!;
        this.lastMs[n] = this.lastMs[i]!;
        this.lastFlags[n] = this.lastFlags[i]!;
        this.lastDetail[n] = this.lastDetail[i];
        this.stamp[n] = this.stamp[i]!;
        this.index.set(this.keys[n]!, n);
      }
      n++;
    }
    const cap = Math.max(16, n);
    this.keys.length = n;
    this.check.length = n;
    this.lastDetail.length = n;
    this.vip = this.vip.slice(0, cap);
    this.status = this.status.slice(0, cap);
    this.successes = this.successes.slice(0, cap);
    this.failures = this.failures.slice(0, cap);
    this.since = this.since.slice(0, cap);
    this.checks = this.checks.slice(0, cap);
    this.failedChecks = this.failedChecks.slice(0, cap);
    this.localErrors = this.localErrors.slice(0, cap);
    this.fedAt = this.fedAt.slice(0, cap);
    this.lastAt = this.lastAt.slice(0, cap);
    this.lastMs = this.lastMs.slice(0, cap);
    this.lastFlags = this.lastFlags.slice(0, cap);
    this.stamp = this.stamp.slice(0, cap);
    this.probe = this.probe.slice(0, cap);
    this.top = n;
    this.index.fit();
    return to;
  }
}

/**
 * A view of the membership columns by membership key, in membership order (no map of its own: a Map of 512,000 keys
 * is ~30 MB). What statuses() and since() hand out. While it is out, a probe result that flips a membership first
 * holds what the view showed for it (hold): from the first hold on, the view shows the columns as they were then,
 * so a reader never sees it change. Only flips happen while it is out (a change of targets releases it first), so a
 * slot keeps its key. Held values cost O(flips while out): a copy of the whole view on the first flip (what these
 * views once made) was 512,000 entries per sync while results came in, and as much garbage. A view still out when
 * VIEWS_OUT_MAX newer ones are makes that copy (detach) and holds no more.
 */
abstract class ColumnView<V> implements ReadonlyMap<string, V> {
  /** What the slots that flipped since the first hold showed before, by slot; null: nothing held (live). */
  private held: Map<number, number> | null = null;
  /** The memberships' version at the first hold (or at detach). */
  private heldAt = 0;
  /** Every entry as shown when detached; null: not detached (it reads the columns). */
  protected frozen: Map<string, V> | null = null;

  constructor(protected readonly m: Memberships) {}

  /** The column value (a number) that slot i shows now. */
  protected abstract raw(i: number): number;
  /** Whether column value r is an entry, and what it shows. */
  protected abstract shows(r: number): boolean;
  protected abstract value(r: number): V;

  /** Before slot i flips: keep what it shows (the first time since the view began holding). */
  hold(i: number): void {
    if (this.frozen !== null) return;
    if (this.held === null) {
      this.held = new Map();
      this.heldAt = this.m.version;
    }
    if (!this.held.has(i)) this.held.set(i, this.raw(i));
  }

  /** Copies every entry as shown into a Map of its own, and reads only that from then on (no more holds). */
  detach(): void {
    if (this.frozen !== null) return;
    const f = new Map<string, V>();
    this.each((v, k) => f.set(k, v));
    this.heldAt = this.shownVersion();
    this.frozen = f;
    this.held = null;
  }

  /** The version of the memberships it shows. */
  protected shownVersion(): number {
    return this.held !== null || this.frozen !== null ? this.heldAt : this.m.version;
  }

  /** Slot i's value as shown (held, else the column's). */
  private shown(i: number): number {
    const h = this.held?.get(i);
    return h === undefined ? this.raw(i) : h;
  }

  get size(): number {
    let n = 0;
    this.each((_v, _k) => n++);
    return n;
  }

  get(key: string): V | undefined {
    if (this.frozen !== null) return this.frozen.get(key);
    const i = this.m.slotOf(key);
    if (i === undefined) return undefined;
    const r = this.shown(i);
    return this.shows(r) ? this.value(r) : undefined;
  }

  has(key: string): boolean {
    if (this.frozen !== null) return this.frozen.has(key);
    const i = this.m.slotOf(key);
    return i !== undefined && this.shows(this.shown(i));
  }

  /** Every entry shown, in membership order. */
  protected each(cb: (value: V, key: string) => void): void {
    if (this.frozen !== null) return this.frozen.forEach(cb);
    const { keys, top } = this.m;
    const held = this.held !== null && this.held.size > 0 ? this.held : null;
    for (let i = 0; i < top; i++) {
      const k = keys[i];
      if (k === undefined) continue;
      const h = held === null ? undefined : held.get(i);
      const r = h === undefined ? this.raw(i) : h;
      if (this.shows(r)) cb(this.value(r), k);
    }
  }

  forEach(cb: (value: V, key: string, map: ReadonlyMap<string, V>) => void, thisArg?: unknown): void {
    // A plain call without thisArg (no .call per entry: desiredState passes over every membership each sync).
    if (thisArg === undefined) this.each((v, k) => cb(v, k, this));
    else this.each((v, k) => cb.call(thisArg, v, k, this));
  }

  *#entries(): Generator<[string, V]> {
    if (this.frozen !== null) return yield* this.frozen.entries();
    const { keys } = this.m;
    for (let i = 0; i < this.m.top; i++) {
      const k = keys[i];
      if (k === undefined) continue;
      const r = this.shown(i);
      if (this.shows(r)) yield [k, this.value(r)];
    }
  }

  entries(): MapIterator<[string, V]> {
    return this.#entries() as unknown as MapIterator<[string, V]>;
  }

  keys(): MapIterator<string> {
    return (function* (e: Iterable<[string, V]>) {
      for (const [k] of e) yield k;
    })(this.#entries()) as unknown as MapIterator<string>;
  }

  values(): MapIterator<V> {
    return (function* (e: Iterable<[string, V]>) {
      for (const [, v] of e) yield v;
    })(this.#entries()) as unknown as MapIterator<V>;
  }

  [Symbol.iterator](): MapIterator<[string, V]> {
    return this.entries();
  }
}

/** Statuses by membership key (statuses()): every membership has one. Tells what changed by the memberships' log. */
class StatusView extends ColumnView<HealthStatus> implements HealthChangeLog {
  protected raw(i: number): number {
    return this.m.status[i]!;
  }

  protected shows(): boolean {
    return true;
  }

  protected value(r: number): HealthStatus {
    return STATUS[r]!;
  }

  override get size(): number {
    // Memberships do not come or go while a view is out.
    return this.frozen?.size ?? this.m.count;
  }

  get changeSource(): object {
    return this.m;
  }

  changeVersion(): number {
    return this.shownVersion();
  }

  changesSince(version: number): readonly string[] | null {
    return this.m.changes(version, this.changeVersion());
  }
}

/**
 * When each membership's status last flipped (since()), for those that flipped while monitored (the column's NaN:
 * none). A value changes only with its status, which the memberships' log tells (changeSource: the statuses' own).
 */
class SinceView extends ColumnView<number> {
  protected raw(i: number): number {
    return this.m.since[i]!;
  }

  protected shows(r: number): boolean {
    return !Number.isNaN(r);
  }

  protected value(r: number): number {
    return r;
  }

  /** The source of the status log that tells its changes too (HealthChangeLog.changeSource of statuses()). */
  get changeSource(): object {
    return this.m;
  }
}

/** One run of a probe. */
interface Run {
  /** Its probe's id (renumbered with the probes while the run is in flight). */
  probe: number;
  startedAt: number;
  /** Started from the slow or settled queue (counted in slowInFlight). */
  slow: boolean;
  cancel: CancelProbe | null;
  /** Cancelled (target gone, monitor stopped): its result is dropped. */
  cancelled: boolean;
}

/**
 * The probes (one per address and check kind: ProbeIndex), in columns indexed by a probe's id in the monitor's
 * DueLanes, and renumbered with it (renumber). No object per probe: one of eight fields was 88 B, and its pointer in
 * the lanes 8 B more (~48 MB and as many objects for every full collection to mark at 511,836 probes); the columns are
 * ~45 B a probe.
 */
class ProbeColumns {
  address: (string | undefined)[] = [];
  /** Its memberships' check at the shortest interval of theirs (probeCheck): what it runs. The prober gets a target
   * made per run (a target object kept per probe was ~60 B each: 30 MB at 512,000). */
  check: (HealthCheckConfig | undefined)[] = [];
  /** Its memberships (slots of the monitor's Memberships; see Members). */
  members: (Members | undefined)[] = [];
  /** The run in flight: a Run, or the id of a run on the prober thread (ThreadProbes.begin: no object); null (or
   * undefined, a free id): none. */
  running: (Run | number | null | undefined)[] = [];
  /**
   * PROBE_SLOW: its last verdict was a timeout (a dead backend that drops SYNs), or it has none yet: it waits behind
   * quick probes when slots or turns run short, since it may hold a slot ~1000x longer than a probe that
   * connects or is refused. (A first probe counts as slow so that, at a start with thousands of dead
   * backends, a healthy backend's second probe does not queue behind all their first ones.)
   * PROBE_GONE: the probe is gone (its members moved or removed), set as its run is cancelled.
   * PROBE_STARTED: scheduled by the start() running (only while it runs).
   */
  flags = new Uint8Array(0);
  /** Start of the last probe (performance.now ms); NaN: never. What it is for (a new interval counted from it). */
  lastStart = new Float64Array(0);
  /** The change of targets that last touched it (HealthMonitor.epoch), negated in the change that made it. */
  mark = new Int32Array(0);

  /** Ids it has room for. */
  get capacity(): number {
    return this.mark.length;
  }

  /** Room for ids below `n` in every column, made now. */
  reserve(n: number): void {
    while (this.growOne(n));
  }

  /** Makes one column room for ids below `n` (`mark` last: capacity is its length); false when all have it. */
  growOne(n: number): boolean {
    const used = Math.min(n, this.mark.length);
    if (this.address.length < n) this.address = roomFor(this.address, n, used);
    else if (this.check.length < n) this.check = roomFor(this.check, n, used);
    else if (this.members.length < n) this.members = roomFor(this.members, n, used);
    else if (this.running.length < n) this.running = roomFor(this.running, n, used);
    else if (this.flags.length < n) this.flags = resized(this.flags, n, used);
    else if (this.lastStart.length < n) this.lastStart = resized(this.lastStart, n, used);
    else if (this.mark.length < n) this.mark = resized(this.mark, n, used);
    else return false;
    return true;
  }

  /**
   * Probe h, new: of `address`, checked as `check` (until the change ends), its one membership slot i. Past the room,
   * the columns grow to `room` (what the monitor reserved) or by an eighth, not one id at a time. They are not sized to
   * the lanes' room for ids (a quarter more than the probes): ~45 B an id, 5.8 MB at 512,000 probes.
   */
  init(h: number, address: string, check: HealthCheckConfig, i: number, mark: number, room: number): void {
    const cap = this.mark.length;
    if (h >= cap) this.reserve(Math.max(h + 1, room, cap + (cap >> 3) + 64));
    this.address[h] = address;
    this.check[h] = check;
    this.members[h] = i;
    this.running[h] = null;
    this.flags[h] = PROBE_SLOW;
    this.lastStart[h] = NaN;
    this.mark[h] = mark;
  }

  /** Lets go of probe h's objects (its id is free). */
  free(h: number): void {
    this.address[h] = undefined;
    this.check[h] = undefined;
    this.members[h] = undefined;
    this.running[h] = null;
  }

  /**
   * The lanes renumbered their ids (old -> new, -1: free; a new id is never above its old one): each probe moves to
   * its new id, and the columns to room for an eighth more.
   */
  renumber(to: Int32Array): void {
    let top = 0;
    for (let h = 0; h < to.length; h++) {
      const k = to[h]!;
      if (k < 0) continue;
      top = k + 1;
      if (k === h) continue;
      this.address[k] = this.address[h];
      this.check[k] = this.check[h];
      this.members[k] = this.members[h];
      this.running[k] = this.running[h]!;
      this.flags[k] = this.flags[h]!;
      this.lastStart[k] = this.lastStart[h]!;
      this.mark[k] = this.mark[h]!;
    }
    const keep = top;
    const cap = keep + (keep >> 3) + 64;
    const cut = <T>(a: (T | undefined)[]): (T | undefined)[] => {
      const b = new Array<T | undefined>(cap);
      for (let h = 0; h < keep; h++) b[h] = a[h];
      return b;
    };
    this.address = cut(this.address);
    this.check = cut(this.check);
    this.members = cut(this.members);
    this.running = cut(this.running);
    this.flags = resized(this.flags, cap, keep);
    this.lastStart = resized(this.lastStart, cap, keep);
    this.mark = resized(this.mark, cap, keep);
  }
}

/**
 * A probe's memberships: a slot number when it has one (most probes, where VIPs do not share backends: an array of
 * one was ~56 B each, 28 MB and as many objects at 512,000), else an array of them (empty only while a change of
 * targets runs). An Int32Array per probe was ~145 B more each: 7 MB at 51,200 backends.
 */
type Members = number | number[];

/**
 * DueLanes lanes of probes: QUICK (the last verdict came before the timeout), SLOW (PROBE_SLOW), and SETTLED: slow
 * probes whose every membership is down already (a dead backend, marked): their timeouts change nothing, so when
 * slots run short they wait behind slow probes that can still mark a backend down. With 51,200 targets timing out
 * at once they were 26,000 of the 180,000 probes before the last went down, each holding a slot for its whole
 * timeout (a recovered one is found a little later only while slots are short).
 */
const QUICK = 0;
const SLOW = 1;
const SETTLED = 2;
const LANES = 3;
/** No lane (HealthMonitor.dueLane, startable). */
const NO_LANE = -1;

/** ProbeColumns.flags bits. */
const PROBE_SLOW = 1;
const PROBE_GONE = 2;
/** Scheduled by the start() running (cleared before it returns). */
const PROBE_STARTED = 4;
/** Its address's family is known (PROBE_IP, PROBE_V6; found at its first run on the prober thread's path). */
const PROBE_FAMILY_KNOWN = 8;
/** Its address is an IP address (TCP checks of it may run on the prober thread); PROBE_V6: an IPv6 one. */
const PROBE_IP = 16;
const PROBE_V6 = 32;
/** Its run on the prober thread was started from the slow or settled queue (Run.slow for those runs). */
const PROBE_RUN_SLOW = 64;
/** Its run on the prober thread is being cancelled: the "aborted" it gets now is dropped (Run.cancelled). */
const PROBE_CANCELLING = 128;

/** Views out (statuses() and since() handed out, not released) that a flip holds values for; older ones copy
 * themselves (ColumnView.detach). A sync hands out two. */
const VIEWS_OUT_MAX = 8;

const memberCount = (ms: Members): number => (typeof ms === 'number' ? 1 : ms.length);
const memberAt = (ms: Members, k: number): number => (typeof ms === 'number' ? ms : ms[k]!);

/** `ms` with slot i added last (the array itself when it is one). */
function withMember(ms: Members, i: number): Members {
  if (typeof ms === 'number') return [ms, i];
  if (ms.length === 0) return i;
  ms.push(i);
  return ms;
}

/** The members `keep` keeps (each as `map` gives it), in order; one left is a number. `ms` itself if all stay. */
function keptMembers(ms: Members, keep: (i: number) => boolean, map?: (i: number) => number): Members {
  if (typeof ms === 'number') {
    const i = map === undefined ? ms : map(ms);
    return keep(i) ? i : [];
  }
  if (map === undefined && ms.length !== 1 && ms.every(keep)) return ms;
  const out: number[] = [];
  for (const x of ms) {
    const i = map === undefined ? x : map(x);
    if (keep(i)) out.push(i);
  }
  return out.length === 1 ? out[0]! : out;
}

/**
 * Probes by identity (probes.ts probeKey): by probeCheckKey, then by address. No key string per probe: the address is
 * the caller's own string and the check kinds are few (a probe key string per probe was ~100 B: 50 MB at 512,000).
 */
class ProbeIndex {
  /**
   * Check kind -> address -> the probe's id in the monitor's DueLanes (held there first): a StringIndex, the address
   * read back from the probe (8 MB at 512,000 probes, where a SpreadMap of the probes was ~20 MB). DueLanes renumbers
   * its ids now and then (renumbered). Its values come in no order: start() orders them itself.
   */
  private readonly byCheck = new Map<string, StringIndex>();
  size = 0;
  /** The last check kind made, and the check it was made from (targets come in runs of one VIP's check). */
  private kindFrom: HealthCheckConfig | null = null;
  private lastKind = '';

  constructor(private readonly pc: ProbeColumns) {}

  /** probeCheckKey(c), the same string as for the check before when c probes alike (no new string per target). */
  kindOf(c: HealthCheckConfig): string {
    const k = this.kindFrom;
    if (
      k === null ||
      !(
        k === c ||
        (k.type === c.type && k.port === c.port && k.path === c.path && k.timeoutMs === c.timeoutMs)
      )
    ) {
      this.kindFrom = c;
      this.lastKind = probeCheckKey(c);
    }
    return this.lastKind;
  }

  /** The probe (its id) of `address` and check kind `checkKey` (probeCheckKey). */
  get(address: string, checkKey: string): number | undefined {
    return this.byCheck.get(checkKey)?.get(address);
  }

  /** Adds probe h (its address in the columns already). */
  add(h: number, checkKey: string): void {
    let g = this.byCheck.get(checkKey);
    if (g === undefined) {
      const pc = this.pc;
      this.byCheck.set(checkKey, (g = new StringIndex((id) => pc.address[id]!)));
    }
    g.set(this.pc.address[h]!, h);
    this.size++;
  }

  /** Takes probe h out (before its columns let go of it). */
  delete(h: number): void {
    const address = this.pc.address[h]!;
    const k = this.kindOf(this.pc.check[h]!);
    const g = this.byCheck.get(k);
    if (g?.get(address) !== h) return;
    g.delete(address);
    this.size--;
    if (g.size === 0) this.byCheck.delete(k);
  }

  /** The lanes renumbered their items (old id -> new id). */
  renumbered(to: Int32Array): void {
    for (const g of this.byCheck.values()) g.remap((id) => to[id]!);
  }

  /** Every probe (its id), in no order. */
  *values(): Generator<number> {
    for (const g of this.byCheck.values()) yield* g.values();
  }
}

/** One change of targets while it runs. */
interface ChangeRun {
  epoch: number;
  /** Probes that gained or lost memberships, or whose memberships' checks changed (ProbeColumns.mark; no Set: at
   * 512,000 new probes a Set and a Map of them were ~0.3 s of a setTargets). */
  touched: number[];
  /** Probes that were there before and gained memberships: how many they had before (their siblings for a new
   * membership: those that joined in this change have nothing to give, and scanning them was quadratic). */
  before: Map<number, number>;
}

/** Notes that change `c` touched probe h: once in `touched`. */
function touch(pc: ProbeColumns, h: number, c: ChangeRun): void {
  const mark = pc.mark[h]!;
  if (mark === c.epoch || mark === -c.epoch) return;
  pc.mark[h] = c.epoch;
  c.touched.push(h);
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

/** Slots a probe holds on average if its target times out every time (part of worstCaseInFlight). */
const inFlightShare = (c: HealthCheckConfig): number => Math.min(1, c.timeoutMs / c.intervalMs);

/** What probe h runs: probeCheck's check of its memberships, the probe's current one when that is unchanged. */
function probeCheckOf(pc: ProbeColumns, h: number, m: Memberships): HealthCheckConfig {
  const ms = pc.members[h]!;
  const was = pc.check[h]!;
  const check = typeof ms === 'number' ? m.check[ms]! : probeCheck(ms, (i) => m.check[i]!);
  return was === check || sameCheck(was, check) ? was : check;
}

/**
 * Events: 'change' (HealthChange) when a membership flips; 'vip' (VipAvailability) when a VIP's count of
 * up backends changes between zero and non-zero (0 up = cannot be served; BGP withdraws it); 'localError'
 * (LocalCheckError) for each membership whose result failed on this host and so left the status as it was;
 * 'checked' (ProbeChecked: type, result, durationMs, address, startedAt, timedOut) once per probe.
 */
export class HealthMonitor extends EventEmitter {
  private readonly m = new Memberships();
  /** What statuses() and since() hand out (new ones once those handed out hold values). */
  private view = new StatusView(this.m);
  private sinceView = new SinceView(this.m);
  /** Views handed out and not released, oldest first: a flip holds what each showed first (ColumnView.hold). */
  private out: ColumnView<unknown>[] = [];
  private readonly jitter: number;
  private readonly random: () => number;
  private readonly prober: Prober;
  /** The prober is defaultProber: its TCP probes of IP addresses start on the prober thread directly (runOnThread). */
  private readonly onThread: boolean;
  /** The prober thread's probes runOnThread started some on (cancel() ends them there, whatever the path now). */
  private thread: ThreadProbes | null = null;
  private readonly clock: () => number;
  private readonly maxInFlight: number;
  private readonly startsPerTurn: number;
  private started = false;
  /**
   * Every probe, queued earliest first in one of three lanes: QUICK ones, then SLOW ones (PROBE_SLOW), then SETTLED
   * ones; one timer for all.
   */
  private readonly lanes = new DueLanes(LANES, { onRenumber: (to) => this.renumbered(to) });
  /** Every probe's fields, by its id in the lanes. */
  private readonly pc = new ProbeColumns();
  /** Every probe by identity. */
  private readonly probes = new ProbeIndex(this.pc);
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
  /** Room for probes reserve() promised ahead and not made yet (the probes' columns grow to it: growRoom, or a new
   * probe past their room); 0 once made (the columns may shrink later: a renumbering cuts them to the probes held). */
  private probeRoom = 0;
  /** Changes of targets made (ProbeColumns.mark). */
  private epoch = 0;
  private idleWaiters: (() => void)[] = [];
  private readonly counts = { started: 0, startedOnThread: 0, delayed: 0, delayedByCap: 0, maxLatenessMs: 0 };
  /** When the cap last stopped a due probe (performance.now ms), and since when it has (null: drained). */
  private capBlockedAt = -Infinity;
  private saturatedSince: number | null = null;
  private worstCaseInFlight = 0;
  /** Checks without a verdict since the monitor was made, by reason (an errno code, or "checker": it threw). */
  private readonly localErrorCounts = new Map<string, number>();

  constructor(opts: HealthMonitorOptions = {}) {
    super();
    this.jitter = opts.jitter ?? DEFAULT_JITTER;
    if (!(this.jitter >= 0 && this.jitter < 1))
      throw new RangeError(`jitter: ${this.jitter} is not in [0, 1)`);
    this.random = opts.random ?? Math.random;
    if (opts.prober !== undefined && opts.checker !== undefined)
      throw new RangeError('prober, checker: give one of them, not both');
    this.prober = opts.prober ?? (opts.checker ? checkerProber(opts.checker) : defaultProber);
    this.onThread = this.prober === defaultProber;
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
   * Costs work per target: a change of a few VIPs' targets is updateTargets.
   */
  setTargets(targets: readonly HealthTarget[], o: PieceOptions = {}): void {
    this.change(null, targets, o);
  }

  /**
   * Changes some targets, as setTargets with every other target kept: `upsert` targets are added or updated (as
   * setTargets would), memberships keyed in `remove` (and not in `upsert`) go; unknown keys are ignored. Costs
   * what it changes, not what the monitor holds: one backend of one VIP at 512,000 memberships.
   */
  updateTargets(
    change: { remove: readonly string[]; upsert: readonly HealthTarget[] },
    o: PieceOptions = {},
  ): void {
    this.change(change.remove, change.upsert, o);
  }

  /**
   * setTargets (`remove` null: every target not in `upsert` goes, worstCaseInFlight is summed afresh) and
   * updateTargets. A key given twice in `upsert` is an error, found before anything changes.
   */
  private change(remove: readonly string[] | null, upsert: readonly HealthTarget[], o: PieceOptions): void {
    const m = this.m;
    const epoch = ++this.epoch;
    // Each target's slot, or -1 for a new key (held in the index as a placeholder, -1 - its position, until
    // it takes a slot). Upserted slots are stamped with the epoch. No Set of the keys: at 51,200 targets one
    // was a third of a setTargets' own time.
    const slots = new Int32Array(upsert.length);
    let fresh = 0;
    m.pending = upsert;
    for (let n = 0; n < upsert.length; n++) {
      const key = upsert[n]!.key;
      const j = m.index.get(key);
      if (j === undefined) {
        m.index.set(key, -1 - n);
        slots[n] = -1;
        fresh++;
      } else if (j < 0 || m.stamp[j] === epoch) {
        for (let x = 0; x < n; x++) if (slots[x] === -1) m.index.delete(upsert[x]!.key);
        m.pending = [];
        throw new RangeError(`targets: key ${JSON.stringify(key)} appears twice`);
      } else {
        m.stamp[j] = epoch;
        slots[n] = j;
      }
    }
    // Room for the new keys only: reserving for every upsert doubled every column at a sync that set all targets again
    // (+72 B per membership at 51,200).
    m.reserve(fresh);
    const before = this.upByVip();
    // The maps handed out by statuses() and since() are read no more (documented there): changed in place.
    this.release();
    const c: ChangeRun = { epoch, touched: [], before: new Map() };
    const touched = c.touched;
    // Upserts first: a new membership may take its state from one that goes (the same backend, the same check).
    for (let n = 0; n < upsert.length; n++) this.upsert(upsert[n]!, slots[n]!, c);
    // every placeholder replaced by its slot
    m.pending = [];
    const pc = this.pc;
    const drop = (i: number): void => {
      touch(pc, m.probe[i]!, c);
      m.release(i);
    };
    if (remove === null) {
      for (let i = 0; i < m.top; i++) if (m.keys[i] !== undefined && m.stamp[i] !== epoch) drop(i);
    } else
      for (const key of remove) {
        const i = m.slotOf(key);
        if (i !== undefined && m.stamp[i] !== epoch) drop(i);
      }
    const moved = m.compact();
    if (moved !== null) {
      const kept = (i: number): boolean => i >= 0;
      const to = (i: number): number => moved[i]!;
      for (const h of this.probes.values()) pc.members[h] = keptMembers(pc.members[h]!, kept, to);
    }
    let worst = this.worstCaseInFlight;
    // probe ids and due times, in pairs
    const toSchedule: number[] = [];
    const gone: number[] = [];
    for (const h of touched) {
      const fresh = pc.mark[h] === -epoch;
      if (!fresh) worst -= inFlightShare(pc.check[h]!);
      // Members that left (freed, or moved to another probe) go from the list.
      const ms = pc.members[h]!;
      if (typeof ms !== 'number') pc.members[h] = keptMembers(ms, (i) => m.probe[i] === h);
      else if (m.probe[ms] !== h) pc.members[h] = [];
      if (memberCount(pc.members[h]!) === 0) {
        this.probes.delete(h);
        if (fresh) this.dropProbe(h);
        else gone.push(h);
        continue;
      }
      const oldInterval = fresh ? null : pc.check[h]!.intervalMs;
      const check = probeCheckOf(pc, h, m);
      pc.check[h] = check;
      worst += inFlightShare(check);
      if (!this.started || (pc.running[h] ?? null) !== null) continue;
      const last = pc.lastStart[h]!;
      if (oldInterval === null) toSchedule.push(h, performance.now() + this.random() * check.intervalMs);
      else if (oldInterval !== check.intervalMs && !Number.isNaN(last))
        toSchedule.push(h, last + check.intervalMs);
    }
    this.cancelling = true;
    try {
      for (const h of gone) {
        this.cancel(h);
        this.dropProbe(h);
      }
    } finally {
      this.cancelling = false;
    }
    // Scheduled once the change's probes are settled (the gone ones unqueued and let go).
    for (let x = 0; x < toSchedule.length; x += 2) this.schedule(toSchedule[x]!, toSchedule[x + 1]!);
    // A burst of new probes may have doubled the lanes' id arrays past what they hold, or many gone have freed most of
    // them: cut once the last piece of a change is in (renumbering the probes: no id of this change is used after it).
    // After every piece, the start at 512 x 1000 (250 pieces) cut them to 1.25x and the next pieces doubled them
    // again: two copies of every probe's entries in one turn, 40-50 ms at ~400,000 probes.
    if (o.more !== true) this.lanes.fit();
    // Summed afresh when every target was given (no rounding carried on for ever).
    if (remove === null) {
      worst = 0;
      for (const h of this.probes.values()) worst += inFlightShare(pc.check[h]!);
    }
    this.worstCaseInFlight = this.probes.size === 0 ? 0 : Math.max(0, worst);
    if (this.started) this.refill();
    this.emitAvailability(before);
  }

  /**
   * Adds membership t or updates it: kept (same address and check: all its state), restarted (its check or
   * address changed: status, since and counts kept, streaks anew, on the probe of its new check) or new (a
   * sibling's state on its probe when one has a result with the same check, else its initial status).
   */
  private upsert(t: HealthTarget, j: number, c: ChangeRun): void {
    const m = this.m;
    const pc = this.pc;
    const v = m.vipOf(t.vip);
    if (j >= 0) {
      const probe = m.probe[j]!;
      const check = m.check[j]!;
      if (m.vip[j] !== v) m.moveVip(j, v);
      const address = pc.address[probe]!;
      if (address === t.address && (check === t.check || sameCheck(check, t.check))) {
        m.check[j] = t.check;
        return;
      }
      m.check[j] = t.check;
      m.successes[j] = 0;
      m.failures[j] = 0;
      m.fedAt[j] = -Infinity;
      touch(pc, probe, c);
      const kind = this.probes.kindOf(t.check);
      if (address !== t.address || kind !== this.probes.kindOf(pc.check[probe]!))
        this.attach(j, t, kind, this.probes.get(t.address, kind), c);
      return;
    }
    const kind = this.probes.kindOf(t.check);
    let status = statusCode(t.initial ?? NEW_TARGET_STATUS);
    let sibling = -1;
    const on = this.probes.get(t.address, kind);
    // Siblings: the members the probe had before this change (none if it was made in it).
    const n =
      on === undefined || pc.mark[on] === -c.epoch ? 0 : (c.before.get(on) ?? memberCount(pc.members[on]!));
    for (let x = 0; x < n; x++) {
      const k = memberAt(pc.members[on!]!, x);
      if (m.probe[k] === on && m.hasLast(k) && sameCheck(m.check[k]!, t.check)) {
        sibling = k;
        status = m.status[k]!;
        break;
      }
    }
    const i = m.take(t.key, v, t.check, status, c.epoch);
    if (sibling >= 0) {
      m.successes[i] = m.successes[sibling]!;
      m.failures[i] = m.failures[sibling]!;
      m.fedAt[i] = m.fedAt[sibling]!;
    }
    this.attach(i, t, kind, on, c);
  }

  /** Puts membership i (target t) on probe `p` of its address and check kind, made when there is none yet. */
  private attach(i: number, t: HealthTarget, kind: string, p: number | undefined, c: ChangeRun): void {
    const pc = this.pc;
    if (p === undefined) {
      p = this.lanes.add();
      // Its check is set when the change ends (probeCheckOf over all its members).
      pc.init(p, t.address, t.check, i, -c.epoch, this.probeRoom);
      if (pc.capacity >= this.probeRoom) this.probeRoom = 0;
      this.probes.add(p, kind);
      c.touched.push(p);
    } else {
      const ms = pc.members[p]!;
      if (pc.mark[p] !== -c.epoch && !c.before.has(p)) c.before.set(p, memberCount(ms));
      pc.members[p] = withMember(ms, i);
      touch(pc, p, c);
    }
    this.m.probe[i] = p;
  }

  /** Lets go of probe h (unqueued, its run cancelled, out of the index already). */
  private dropProbe(h: number): void {
    this.lanes.delete(h);
    this.pc.free(h);
  }

  /** The lanes renumbered the probes (old id -> new id; see DueLanes.renumber): every holder of an id follows. */
  private renumbered(to: Int32Array): void {
    const pc = this.pc;
    pc.renumber(to);
    // after the last piece of a change (fit): what was promised for it is made or no longer wanted
    this.probeRoom = 0;
    this.probes.renumbered(to);
    const m = this.m;
    for (let i = 0; i < m.top; i++) {
      const h = m.probe[i]!;
      if (h >= 0) m.probe[i] = to[h]!;
    }
    // runs in flight name their probe
    const { running } = pc;
    for (let h = 0; h < running.length; h++) {
      const r = running[h];
      if (typeof r === 'object' && r !== null) r.probe = h;
    }
    this.thread?.remapOwners(this.threadDone, (h) => to[h]!);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    // In the order the probes came, as their targets were given: by first membership (slots keep the order the
    // memberships came in), then any probe not reached so (none is known). The probes' map lists them shard by shard.
    const { probe, top } = this.m;
    const { flags } = this.pc;
    for (let i = 0; i < top; i++) {
      const h = probe[i]!;
      if (h >= 0 && (flags[h]! & PROBE_STARTED) === 0) this.startProbe(h);
    }
    for (const h of this.probes.values()) {
      if ((flags[h]! & PROBE_STARTED) === 0) this.startProbe(h);
      flags[h] = flags[h]! & ~PROBE_STARTED;
    }
  }

  private startProbe(h: number): void {
    const pc = this.pc;
    pc.flags[h] = (pc.flags[h]! & ~PROBE_GONE) | PROBE_STARTED;
    this.schedule(h, performance.now() + this.random() * pc.check[h]!.intervalMs);
  }

  /** Stops probing and aborts every probe in flight (their sockets close); idle() resolves once they settled. */
  stop(): void {
    this.started = false;
    this.cancelling = true;
    try {
      for (const h of this.probes.values()) this.cancel(h, false);
    } finally {
      this.cancelling = false;
    }
    this.lanes.clear();
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

  /**
   * Room for `n` more memberships than it holds now (and an eighth more), made at once: a caller about to add that many in pieces
   * (setTargets, then updateTargets) grows the monitor's columns once instead of by an eighth many times over (at a
   * start of 512,000 targets in pieces of 2,048 each growth copied every column: 36-82 ms per piece that grew,
   * 330 ms once, with /healthz waiting). The probe queues' ids get room for `n` more probes too (a probe per
   * membership at most; what stays unused is cut after the change's last piece). `ahead`: promised now, made by
   * growRoom() an array at a time, or at once by the first target that needs it.
   */
  reserve(n: number, o: { ahead?: boolean } = {}): void {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`n: ${n} is not a non-negative integer`);
    // as many probes at most (one per membership where no two share a backend); the last piece's fit() cuts the rest
    const probes = this.lanes.held + n;
    if (o.ahead === true) {
      this.m.reserveAhead(n);
      this.lanes.reserveAhead(n);
      this.probeRoom = Math.max(this.probeRoom, probes);
    } else {
      this.m.reserve(n);
      this.lanes.reserve(n);
      this.pc.reserve(probes);
    }
  }

  /**
   * After reserve(): makes one more of its arrays the room reserved (each column of the memberships, then the probe
   * queue's arrays, then the probes' columns), a few ms per 100,000 slots of new memory; false when all have it. A caller adding many targets in
   * pieces calls it in turns of its own until false, so that no turn pays for ~20 arrays grown at once (~45 ms at
   * 512,000 here) and no piece for five arrays of objects grown in one write.
   */
  growRoom(): boolean {
    if (this.m.growOne() || this.lanes.growOne() || this.pc.growOne(this.probeRoom)) return true;
    this.probeRoom = 0;
    return false;
  }

  /** Probes the probes' columns have room for now without growing (reserve; cut by a change that leaves far fewer). */
  get probeCapacity(): number {
    return this.pc.capacity;
  }

  /** Memberships it has room for now without growing its columns (reserve). */
  get capacity(): number {
    return this.m.capacity();
  }

  /**
   * The maps statuses() and since() handed out are read no more (a desired state was built from them): a flip then
   * holds nothing for them, and what they show is no longer defined.
   */
  release(): void {
    this.out = [];
  }

  /** One membership's status; undefined: not a target. */
  status(key: string): HealthStatus | undefined {
    const i = this.m.slotOf(key);
    return i === undefined ? undefined : STATUS[this.m.status[i]!];
  }

  /**
   * Status by membership key: the `health` input of desiredState. A view of the monitor's columns, not a copy (at
   * 512,000 memberships a copy per sync was ~0.4 s): probe results never change what it shows (a flip holds what
   * it showed first) until release(); setTargets and updateTargets do (they release), so read it before calling
   * them. Keys keep their order: a new membership comes last.
   */
  statuses(): ReadonlyMap<string, HealthStatus> & HealthChangeLog {
    this.handOut(this.view);
    return this.view;
  }

  /**
   * When each target's status last flipped (clock ms), for targets that flipped while monitored: the
   * `healthSince` input of desiredState (a backend down by health check keeps its flows for a grace from then).
   * A view of the monitor's columns, handed out as statuses() is; its changes are in the statuses' log (its
   * `changeSource` is theirs: a value changes only with its status).
   */
  since(): ReadonlyMap<string, number> & { readonly changeSource: object } {
    this.handOut(this.sinceView);
    return this.sinceView;
  }

  /** Notes view v as out; the oldest out beyond VIEWS_OUT_MAX copies itself and leaves the list (a caller that hands
   * views out without release() in between, e.g. syncs that fail before retargeting, holds no more than that). */
  private handOut(v: ColumnView<unknown>): void {
    if (this.out.includes(v)) return;
    this.out.push(v);
    while (this.out.length > VIEWS_OUT_MAX) this.out.shift()!.detach();
  }

  /** Checks that failed on this host since the monitor was made, by reason (monotonic: a Prometheus counter). */
  localErrors(): Map<string, number> {
    return new Map(this.localErrorCounts);
  }

  /** Checked backends up / total per VIP name. */
  availability(): Map<string, VipAvailability> {
    const { vipNames, vipUp, vipTotal } = this.m;
    const out = new Map<string, VipAvailability>();
    // A VIP whose memberships all went is not checked any more.
    vipNames.forEach((vip, v) => {
      if (vipTotal[v]! > 0) out.set(vip, { vip, up: vipUp[v]!, total: vipTotal[v]! });
    });
    return out;
  }

  /** Probes, memberships and in-flight figures. */
  stats(): ProbeStats {
    const now = performance.now();
    const a = this.lanes.due(QUICK, now);
    const b = this.lanes.due(SLOW, now);
    const c = this.lanes.due(SETTLED, now);
    const earliest = Math.min(a.earliest, b.earliest, c.earliest);
    return {
      probes: this.probes.size,
      memberships: this.m.count,
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
    return this.eachMembership((i) => {
      const t = this.countsAt(i) as TargetSnapshot;
      t.since = Number.isNaN(m.since[i]) ? null : m.since[i]!;
      t.successes = m.successes[i]!;
      t.failures = m.failures[i]!;
      t.localErrors = m.localErrors[i]!;
      t.last = m.lastOf(i);
      return t;
    });
  }

  /** Per membership: what the per-backend health metrics read (snapshot() less what they do not: no object for
   * the last result, which every scrape would otherwise make for every membership). */
  checkCounts(): TargetCounts[] {
    return this.eachMembership((i) => this.countsAt(i));
  }

  /** `make` of every live membership's slot, in membership order. */
  private eachMembership<T>(make: (i: number) => T): T[] {
    const out: T[] = [];
    for (let i = 0; i < this.m.top; i++) if (this.m.keys[i] !== undefined) out.push(make(i));
    return out;
  }

  /** Membership i's counts (what snapshot() and checkCounts() share). */
  private countsAt(i: number): TargetCounts {
    const m = this.m;
    return {
      key: m.keys[i]!,
      vip: m.vipNames[m.vip[i]!]!,
      address: this.pc.address[m.probe[i]!]!,
      type: m.check[i]!.type,
      status: STATUS[m.status[i]!]!,
      checks: m.checks[i]!,
      failedChecks: m.failedChecks[i]!,
    };
  }

  /** Unqueues the probe and cancels its run; gone (PROBE_GONE) unless it is only the monitor stopping. */
  private cancel(h: number, gone = true): void {
    const pc = this.pc;
    this.lanes.remove(h);
    if (gone) pc.flags[h] = pc.flags[h]! | PROBE_GONE;
    const run = pc.running[h] ?? null;
    if (run === null) return;
    if (typeof run === 'number') {
      // its "aborted" comes now, from the thread's cancel, and is dropped (threadDone)
      pc.flags[h] = pc.flags[h]! | PROBE_CANCELLING;
      try {
        this.thread!.cancel(run);
      } finally {
        pc.flags[h] = pc.flags[h]! & ~PROBE_CANCELLING;
      }
      return;
    }
    run.cancelled = true;
    pc.running[h] = null;
    run.cancel?.();
  }

  /**
   * Queues the probe's next start at `at` (performance.now ms; a time past means at once). Absolute, so
   * probes due together keep their order (one timer serves every probe: see arm).
   */
  private schedule(h: number, at: number): void {
    const slow = (this.pc.flags[h]! & PROBE_SLOW) !== 0;
    this.lanes.push(h, slow ? (this.allDown(h) ? SETTLED : SLOW) : QUICK, at);
    this.arm();
  }

  /** Whether every membership of probe h is down (its timeouts can flip none). */
  private allDown(h: number): boolean {
    const status = this.m.status;
    const ms = this.pc.members[h]!;
    if (typeof ms === 'number') return status[ms] !== UP;
    for (let k = 0; k < ms.length; k++) if (status[ms[k]!] === UP) return false;
    return true;
  }

  /** Whether a slot is free for a quick probe, and for a slow one (which may not take the quick reserve). */
  private quickFree(): boolean {
    return this.inFlight < this.maxInFlight;
  }

  private slowFree(): boolean {
    return this.inFlight < this.maxInFlight && this.slowInFlight < this.slowSlots;
  }

  /** The lane whose top is due at `now`: quick first, else slow, else settled; NO_LANE: none due. */
  private dueLane(now: number): number {
    const q = this.lanes;
    if (q.topAt(QUICK) <= now) return QUICK;
    if (q.topAt(SLOW) <= now) return SLOW;
    return q.topAt(SETTLED) <= now ? SETTLED : NO_LANE;
  }

  /** The lane whose due top may start now (a slot free for it); NO_LANE: none. */
  private startable(now: number): number {
    const q = this.lanes;
    if (q.topAt(QUICK) <= now && this.quickFree()) return QUICK;
    if (!this.slowFree()) return NO_LANE;
    if (q.topAt(SLOW) <= now) return SLOW;
    return q.topAt(SETTLED) <= now ? SETTLED : NO_LANE;
  }

  /** After slots freed: start what is due at once, else re-arm. */
  private refill(): void {
    if (this.started && this.pumpSoon === null && this.startable(performance.now()) !== NO_LANE) this.pump();
    else this.arm();
  }

  /** Arms the single timer for the earliest queued probe (none while the in-flight cap is reached: a completion pumps). */
  private arm(): void {
    // A lane without a free slot needs no timer: a completion pumps.
    const q = this.quickFree() ? this.lanes.topAt(QUICK) : Infinity;
    const s = this.slowFree() ? Math.min(this.lanes.topAt(SLOW), this.lanes.topAt(SETTLED)) : Infinity;
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
    let due = NO_LANE;
    while (this.started && (due = this.dueLane(now)) !== NO_LANE) {
      const go = this.startable(now);
      if (go === NO_LANE) {
        this.blocked(now);
        break;
      }
      if (this.turnStarts >= this.startsPerTurn) {
        this.pumpSoon = setImmediate(this.pump);
        break;
      }
      // The count restarts on the next turn (an immediate queued now runs before a pumpSoon queued later).
      if (this.turnStarts++ === 0) setImmediate(this.newTurn);
      const at = this.lanes.topAt(go);
      this.run(this.lanes.pop(go), at, now, go !== QUICK);
    }
    if (due === NO_LANE && this.saturatedSince !== null) this.drained(now);
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

  /** The target a probe's run gets: its first membership's, with the probe's check. */
  private targetOf(h: number): HealthTarget {
    const m = this.m;
    const pc = this.pc;
    const first = memberAt(pc.members[h]!, 0);
    return {
      key: m.keys[first]!,
      vip: m.vipNames[m.vip[first]!]!,
      address: pc.address[h]!,
      check: pc.check[h]!,
    };
  }

  private run(h: number, due: number, now: number, slow: boolean): void {
    const late = now - due;
    if (late > LATE_MS) {
      this.counts.delayed++;
      if (this.capBlockedAt >= due) this.counts.delayedByCap++;
    }
    if (late > this.counts.maxLatenessMs) this.counts.maxLatenessMs = late;
    this.counts.started++;
    this.inFlight++;
    if (slow) this.slowInFlight++;
    const pc = this.pc;
    pc.lastStart[h] = Math.floor(now);
    if (this.onThread && pc.check[h]!.type === 'tcp' && this.runOnThread(h, slow)) return;
    const run: Run = { probe: h, startedAt: now, slow, cancel: null, cancelled: false };
    pc.running[h] = run;
    let settled = false;
    const done = (result: CheckResult): void => {
      if (settled) return;
      settled = true;
      this.done(run, result);
    };
    try {
      run.cancel = this.prober(this.targetOf(h), done);
    } catch (err) {
      // The prober itself broke, not the backend: no verdict (reported on a later turn: we are inside pump).
      const detail = `check failed: ${(err as Error)?.message ?? err}`;
      queueMicrotask(() => done({ ok: false, durationMs: 0, detail, local: true }));
    }
  }

  /**
   * Starts probe h's TCP probe on the prober thread with nothing made for the run (its id in the running column, its
   * slowness in its flags, its start in lastStart): the Run, the target, the options, the callbacks and the thread's waiter of
   * the general path were ~350 bytes a probe, and at ~8,500 probes a second V8 kept them to its full collections
   * (~345 MB of the old space's garbage over a mass flip at 512 x 1000, in an allocation profile). False (nothing
   * started) where the address is no IP address, the thread is not available, or the start throws: the general
   * path then runs it (and reports its error).
   */
  private runOnThread(h: number, slow: boolean): boolean {
    const pc = this.pc;
    const address = pc.address[h]!;
    let f = pc.flags[h]!;
    if ((f & PROBE_FAMILY_KNOWN) === 0) {
      f |= PROBE_FAMILY_KNOWN | (isIPv4(address) ? PROBE_IP : isIPv6(address) ? PROBE_IP | PROBE_V6 : 0);
      pc.flags[h] = f;
    }
    if ((f & PROBE_IP) === 0) return false;
    const t = tcpProbeThread();
    if (t === null) return false;
    const check = pc.check[h]!;
    let id: number;
    try {
      id = t.begin(address, (f & PROBE_V6) !== 0, check.port, check.timeoutMs, this.threadDone, h);
    } catch {
      return false;
    }
    this.thread = t;
    pc.running[h] = id;
    pc.flags[h] = slow ? f | PROBE_RUN_SLOW : f & ~PROBE_RUN_SLOW;
    this.counts.startedOnThread++;
    return true;
  }

  /** A verdict of runOnThread's for probe h (once per run: ThreadProbes drops what comes after a cancel; its owner,
   * h, follows the probes' renumbering: renumbered). */
  private readonly threadDone = (result: CheckResult, h: number): void => {
    const pc = this.pc;
    const f = pc.flags[h]!;
    pc.running[h] = null;
    this.finish(h, pc.lastStart[h]!, (f & PROBE_RUN_SLOW) !== 0, (f & PROBE_CANCELLING) !== 0, result);
  };

  private done(run: Run, result: CheckResult): void {
    // A run cancelled is no longer its probe's (whose id may since have been renumbered or freed): dropped in finish.
    if (!run.cancelled && this.pc.running[run.probe] === run) this.pc.running[run.probe] = null;
    this.finish(run.probe, run.startedAt, run.slow, run.cancelled, result);
  }

  /** A run's end: its slot given back, its result applied unless it is dropped. */
  private finish(h: number, startedAt: number, slow: boolean, cancelled: boolean, result: CheckResult): void {
    this.inFlight--;
    if (slow) this.slowInFlight--;
    try {
      // Cancelled (its probe gone, or the monitor stopped), or the monitor stopped since: drop the result.
      if (!cancelled && this.started && (this.pc.flags[h]! & PROBE_GONE) === 0)
        this.apply(h, startedAt, result);
    } catch (err) {
      this.emit('error', err);
    } finally {
      if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
      if (!this.cancelling) this.refill();
    }
  }

  /** Fans one probe result out to the memberships due to take it, then queues the probe's next start. */
  private apply(h: number, startedAt: number, result: CheckResult): void {
    const pc = this.pc;
    const pcheck = pc.check[h]!;
    // Every probe, for the duration histogram (peak_xdp_health_check_duration_seconds); no event object made
    // when nobody listens (a timing-out target's probe is tens of thousands a second).
    if (this.listenerCount('checked') > 0) {
      const outcome = result.local === true ? 'local_error' : result.ok ? 'success' : 'failure';
      const checked: ProbeChecked = { type: pcheck.type, result: outcome, durationMs: result.durationMs, address: pc.address[h]!, startedAt, timedOut: result.timedOut === true }; // prettier-ignore
      this.emit('checked', checked);
    }
    const at = Date.now();
    const flags = lastFlags(result);
    if (result.local === true) {
      const reason = LOCAL_ERROR_CODES.has(result.detail) ? result.detail : 'checker';
      this.localErrorCounts.set(reason, (this.localErrorCounts.get(reason) ?? 0) + 1);
    }
    // A probe that timed out waits behind quick ones when slots run short (its wall time is no measure: an
    // event loop late to read a connect would make healthy ones look slow).
    if (result.local !== true)
      pc.flags[h] = result.timedOut === true ? pc.flags[h]! | PROBE_SLOW : pc.flags[h]! & ~PROBE_SLOW;
    // Every membership's state first, then the events: a listener (which may call setTargets) sees the whole
    // result applied. No allocation per membership: flips are few, and only they are remembered.
    const m = this.m;
    const members = pc.members[h]!;
    const n = memberCount(members);
    let taken: number[] | null = null;
    for (let k = 0; k < n; k++) {
      const i = memberAt(members, k);
      const check = m.check[i]!;
      if (!takesResult(m.fedAt[i]!, startedAt, check.intervalMs, this.jitter)) continue;
      m.fedAt[i] = startedAt;
      m.setLast(i, at, result.durationMs, flags, result.detail);
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
      this.beforeFlip(i);
      m.setStatus(i, statusCode(to));
      m.since[i] = this.clock();
      (taken ??= []).push(i);
    }
    // The next start counts from this one's start, not its end: a probe that timed out keeps its cadence.
    const next = startedAt + jittered(pcheck.intervalMs, this.jitter, this.random());
    this.schedule(h, next);
    if (taken === null) return;
    if (result.local === true) this.noVerdict(m, taken, result);
    else this.flipped(m, taken, result);
  }

  /**
   * Tells the flips of one result (`flips`: memberships, in fan-out order, whose status changed): a 'change'
   * each, and a 'vip' for each VIP whose count of up backends went between zero and non-zero by it. Every event
   * is made before the first is emitted: a listener may change the targets (and so the columns) meanwhile.
   */
  private flipped(m: Memberships, flips: readonly number[], result: CheckResult): void {
    // The up counts before this result: replayed flip by flip, so each VIP's crossing is told where it fell.
    const up = new Map<number, number>();
    for (const i of flips) {
      const v = m.vip[i]!;
      up.set(v, (up.get(v) ?? m.vipUp[v]!) + (m.status[i] === UP ? -1 : 1));
    }
    const events: [string, HealthChange | VipAvailability][] = [];
    for (const i of flips) {
      const to = STATUS[m.status[i]!]!;
      const from: HealthStatus = to === 'up' ? 'down' : 'up';
      const v = m.vip[i]!;
      const vip = m.vipNames[v]!;
      events.push([
        'change',
        { key: m.keys[i]!, vip, address: this.pc.address[m.probe[i]!]!, from, to, result },
      ]);
      const was = up.get(v)!;
      const now = was + (to === 'up' ? 1 : -1);
      up.set(v, now);
      // Only a VIP's change between zero and non-zero up backends is an event.
      if ((was === 0) !== (now === 0)) events.push(['vip', { vip, up: now, total: m.vipTotal[v]! }]);
    }
    for (const [name, ev] of events) this.emit(name, ev);
  }

  /**
   * Checks that failed on this host (out of fds, buffers, ports; or the checker threw): the status and the
   * rise/fall streaks stay as they were, so a loaded balancer host does not take its healthy backends out.
   */
  private noVerdict(m: Memberships, taken: readonly number[], result: CheckResult): void {
    const address = this.pc.address;
    const events = taken.map((i): LocalCheckError => ({ key: m.keys[i]!, vip: m.vipNames[m.vip[i]!]!, address: address[m.probe[i]!]!, result })); // prettier-ignore
    for (const ev of events) this.emit('localError', ev);
  }

  /** Before slot i flips: what statuses() and since() handed out keeps what it showed (held); later hand-outs get
   * new views. */
  private beforeFlip(i: number): void {
    if (this.out.length === 0) return;
    for (const v of this.out) v.hold(i);
    if (this.out.includes(this.view)) this.view = new StatusView(this.m);
    if (this.out.includes(this.sinceView)) this.sinceView = new SinceView(this.m);
  }

  /** Up backends per checked VIP name now (for emitAvailability after a change of targets). */
  private upByVip(): Map<string, number> {
    const { vipNames, vipUp, vipTotal } = this.m;
    const out = new Map<string, number>();
    for (let v = 0; v < vipNames.length; v++) if (vipTotal[v]! > 0) out.set(vipNames[v]!, vipUp[v]!);
    return out;
  }

  private emitAvailability(before: Map<string, number>): void {
    const { vipNames, vipUp, vipTotal } = this.m;
    for (let v = 0; v < vipNames.length; v++) {
      if (vipTotal[v] === 0) continue;
      const up = before.get(vipNames[v]!);
      if (up === undefined || (up === 0) !== (vipUp[v] === 0))
        this.emit('vip', { vip: vipNames[v]!, up: vipUp[v]!, total: vipTotal[v]! });
    }
  }
}
