// The daemon's health side: the monitor's statuses (with seeds bridging a restart) as the desired state's
// input, its targets from each desired state, and its events logged.
import type { Datapath } from '../datapath/types';
import type { BacklogChange, HealthTarget, LocalCheckError } from '../health/monitor';
import type { HealthStatus } from '../health/state';
import { targetCount, targetPieces, targetsChangeSteps } from '../health/targets';
import { lineBudget, rateLimited, type Logger } from '../log';
import type { DesiredState, DesiredVip } from '../reconcile';
import type { DaemonHealthMonitor } from './collaborators';

/**
 * Targets set per event-loop turn at most: a change of every target (the start's; 512,000 at 512 x 1000, ~1.6 s)
 * would otherwise hold the loop in one task while /healthz and timers wait (~6-10 ms per piece here).
 */
export const TARGETS_PER_TURN = 2048;
/**
 * Memberships looked at per event-loop turn where each costs a lookup or a small object, not a change of the
 * monitor's state (the start's targets built, statuses compared with the desired state's): ~0.1-0.3 us each, so a
 * few ms per turn. In one piece at 512 x 1000 they held the loop 261 ms (the targets) and 183 ms (the comparison).
 */
export const LOOKS_PER_TURN = 8 * TARGETS_PER_TURN;

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Health checks that fail on this host are logged once per this interval at most (with a count). */
const LOCAL_ERROR_LOG_MS = 10_000;
/** VIP names a health-change line lists when a shared probe flipped several memberships. */
const LOGGED_VIPS = 5;
/**
 * Health-change lines (one per backend and change) per window at most; the changes past them are counted and said in
 * one line when the window ends. Every backend of 512 x 1000 going down (a partition) was 512,000 lines (~80 MB) in
 * about a minute: ~13 MB of them waited in the logger's buffer for a slow reader of stderr (a heap snapshot), and
 * each line costs its serialisation. /state and the metrics show every status.
 */
export const FLIP_LOG = { lines: 100, windowMs: 1000 } as const;
/** Backends the summary of unlogged health changes names. */
const UNLOGGED_NAMED = 5;

export class HealthFeed {
  private readonly monitor: DaemonHealthMonitor;
  private readonly log: Logger;
  /** Statuses the datapath held before a restart, until the checks report. */
  private seeds = new Map<string, HealthStatus>();
  /** The targets would need more slots than the cap if they all timed out (logged on each crossing). */
  private overCap = false;
  /** The VIPs the monitor's targets were last set from (null: never set). */
  private targetsOf: readonly DesiredVip[] | null = null;
  /** The retarget running (they run one after another: each diffs against the last one's targets). */
  private running: Promise<unknown> = Promise.resolve();

  private readonly flipLog: { lines: number; windowMs: number };

  constructor(o: {
    monitor: DaemonHealthMonitor;
    log: Logger;
    /** Health-change lines per window (default FLIP_LOG). */
    flipLog?: { lines: number; windowMs: number };
  }) {
    this.monitor = o.monitor;
    this.log = o.log;
    this.flipLog = o.flipLog ?? FLIP_LOG;
  }

  /** After adoption: backends the datapath holds as down stay down until their checks say otherwise. */
  async seed(dp: Datapath, probe: DesiredState): Promise<void> {
    const states = new Map((await dp.listBackends()).map((b) => [b.id, b.state]));
    for (const v of probe.vips)
      for (const b of v.backends) if (states.get(b.id) === 'down') this.seeds.set(b.key, 'down');
  }

  /**
   * The desiredState inputs: health by membership key, and when each last flipped. The monitor's own maps (no
   * copy per sync) unless seeds bridge a restart; read them before the next retarget.
   */
  inputs(): { health: ReadonlyMap<string, HealthStatus>; healthSince: ReadonlyMap<string, number> } {
    const statuses = this.monitor.statuses();
    const healthSince = this.monitor.since();
    if (this.seeds.size === 0) return { health: statuses, healthSince };
    const health = new Map(this.seeds);
    for (const [k, s] of statuses) health.set(k, s);
    return { health, healthSince };
  }

  /**
   * Sets the monitor's targets from `desired`; resolves true when a status already differs from it (new targets
   * start with a status but emit no change: a sync more makes /state and the datapath show it). A big change is set
   * in pieces of TARGETS_PER_TURN with event-loop turns between them; retargets run one after another.
   */
  retarget(desired: DesiredState): Promise<boolean> {
    const run = this.running.then(() => this.retargetNow(desired));
    this.running = run.catch(() => undefined);
    return run;
  }

  private async retargetNow(desired: DesiredState): Promise<boolean> {
    // `desired` is built: the maps inputs() handed out for it are read no more.
    this.monitor.release();
    // Whether a target set now has a status other than `desired` holds for it (a new target starts with one).
    let differs: () => Promise<boolean>;
    if (this.targetsOf === null) {
      // healthTargets(desired, seeds), made and set a piece at a time; room for them promised now, made an array at
      // a time in turns of their own before the first piece
      this.monitor.reserve?.(targetCount(desired.vips), { ahead: true });
      await this.setAllInPieces(desired.vips);
      differs = async () => {
        let looked = 0;
        for (const v of desired.vips) {
          for (const b of v.backends) {
            const s = this.monitor.status(b.key);
            if (s !== undefined && s !== b.health) return true;
          }
          looked += v.backends.length;
          if (looked >= LOOKS_PER_TURN) {
            looked = 0;
            await turn();
          }
        }
        return false;
      };
    } else {
      // Only what changed: a full setTargets costs work per membership (~1 s at 512,000), on every change; and only
      // the targets set now are looked at (every membership of the changed VIPs was ~0.1 ms per 1,000).
      // targetsChange(targetsOf, desired.vips, seeds), in pieces
      const steps = targetsChangeSteps(this.targetsOf, desired.vips, this.seeds);
      let looked = 0;
      let s = steps.next();
      for (; s.done !== true; s = steps.next()) {
        looked += s.value;
        if (looked >= LOOKS_PER_TURN) {
          looked = 0;
          await turn();
        }
      }
      const change = s.value;
      await this.setInPieces(change);
      differs = async () => {
        for (let i = 0; i < change.upsert.length; i++) {
          const s = this.monitor.status(change.upsert[i]!.key);
          if (s !== undefined && s !== change.health[i]) return true;
          if ((i + 1) % LOOKS_PER_TURN === 0) await turn();
        }
        return false;
      };
    }
    // The latest even when the same: keeping the older would keep a whole older desired state alive (an object
    // per membership).
    this.targetsOf = desired.vips;
    const { worstCaseInFlight, maxInFlight, probes } = this.monitor.stats();
    if (worstCaseInFlight > maxInFlight !== this.overCap) {
      this.overCap = !this.overCap;
      if (this.overCap)
        this.log.warn(
          { probes, worstCaseInFlight: Math.ceil(worstCaseInFlight), maxInFlight },
          'health probes: if every target timed out they would need more sockets than the in-flight cap ' +
            '(from the open-file limit): dead backends would be marked down later than fall x interval',
        );
    }
    // Seeds only bridge a restart: once checks report, their statuses rule.
    if (this.seeds.size > 0) this.seeds = new Map([...this.seeds].filter(([k]) => this.monitor.status(k) === undefined)); // prettier-ignore
    // Statuses of targets set before differ from `desired` only by flips since its inputs were read, and each flip
    // asks for a sync of its own (start's onChange).
    return await differs();
  }

  /**
   * Every target of `vips` (with the seeds) in place of the monitor's, made and set a piece of TARGETS_PER_TURN at a
   * time with a turn between pieces (setInPieces' `whole`), so that only one piece of them is held at once.
   */
  private async setAllInPieces(vips: readonly DesiredVip[]): Promise<void> {
    const pieces = targetPieces(vips, this.seeds, TARGETS_PER_TURN);
    const first = pieces.next();
    let next = pieces.next();
    if (first.done === true || next.done === true) {
      this.monitor.setTargets(first.done === true ? [] : first.value);
      return;
    }
    while (this.monitor.growRoom?.() === true) await turn();
    this.monitor.setTargets(first.value, { more: true });
    while (next.done !== true) {
      await turn();
      const piece = next.value;
      next = pieces.next();
      this.monitor.updateTargets({ remove: [], upsert: piece }, { more: next.done !== true });
    }
  }

  /**
   * A change of targets (no key both removed and upserted: targetsChange gives none), in pieces of TARGETS_PER_TURN
   * with a turn between them: upserts first, then removals, as one updateTargets orders them.
   */
  private async setInPieces(c: {
    remove: readonly string[];
    upsert: readonly HealthTarget[];
  }): Promise<void> {
    const n = TARGETS_PER_TURN;
    const { remove, upsert } = c;
    if (remove.length + upsert.length <= n) {
      if (remove.length + upsert.length > 0) this.monitor.updateTargets(c);
      return;
    }
    // Every piece but the last says more follow (the monitor sizes its probe queues once, at the last).
    while (this.monitor.growRoom?.() === true) await turn();
    for (let i = 0; i < upsert.length; i += n) {
      if (i > 0) await turn();
      const more = i + n < upsert.length || remove.length > 0;
      this.monitor.updateTargets({ remove: [], upsert: upsert.slice(i, i + n) }, { more });
    }
    for (let r = 0; r < remove.length; r += n) {
      if (upsert.length > 0 || r > 0) await turn();
      this.monitor.updateTargets(
        { remove: remove.slice(r, r + n), upsert: [] },
        { more: r + n < remove.length },
      );
    }
  }

  /**
   * Starts the checks; `onChange` after flips. A shared probe flips every membership of its backend at once
   * (a node behind 1,000 Services): the flips of one turn are logged one line per backend and change, and
   * onChange is called once for them.
   */
  start(onChange: () => void): void {
    let batch: { vip: string; address: string; from: string; to: string }[] = [];
    const budget = lineBudget(this.flipLog.lines, this.flipLog.windowMs);
    // Changes past the budget, said in one line when the window ends (null: none waiting).
    let unlogged: { changes: number; memberships: number; up: number; down: number; first: string[] } | null =
      null;
    const sayUnlogged = (): void => {
      const u = unlogged!;
      unlogged = null;
      const { lines, windowMs } = this.flipLog;
      this.log.info(
        { changes: u.changes, memberships: u.memberships, toDown: u.down, toUp: u.up, first: u.first, lines, windowMs }, // prettier-ignore
        'backend health changes past the log budget: counted, not logged one by one (/state shows every status)',
      );
    };
    const flush = (): void => {
      const flips = new Map<string, { backend: string; from: string; to: string; vips: string[] }>();
      for (const c of batch) {
        const key = `${c.address} ${c.from} ${c.to}`;
        const f = flips.get(key) ?? { backend: c.address, from: c.from, to: c.to, vips: [] };
        f.vips.push(c.vip);
        flips.set(key, f);
      }
      batch = [];
      for (const f of flips.values()) {
        if (!budget()) {
          if (unlogged === null) {
            unlogged = { changes: 0, memberships: 0, up: 0, down: 0, first: [] };
            setTimeout(sayUnlogged, this.flipLog.windowMs).unref();
          }
          unlogged.changes++;
          unlogged.memberships += f.vips.length;
          if (f.to === 'down') unlogged.down++;
          else unlogged.up++;
          if (unlogged.first.length < UNLOGGED_NAMED) unlogged.first.push(f.backend);
          continue;
        }
        this.log.info(
          f.vips.length === 1
            ? { vip: f.vips[0], backend: f.backend, from: f.from, to: f.to }
            : { vips: f.vips.length, first: f.vips.slice(0, LOGGED_VIPS), backend: f.backend, from: f.from, to: f.to }, // prettier-ignore
          'backend health changed',
        );
      }
      onChange();
    };
    this.monitor.on('change', (c: { vip: string; address: string; from: string; to: string }) => {
      if (batch.push(c) === 1) setImmediate(flush);
    });
    // Checks failing on this host (EMFILE, ...) leave statuses alone; say so, once per interval at most.
    const localErrorLog = rateLimited(LOCAL_ERROR_LOG_MS);
    this.monitor.on('localError', (c: LocalCheckError) =>
      localErrorLog((suppressed) =>
        this.log.warn(
          { vip: c.vip, backend: c.address, detail: c.result.detail, suppressedSinceLast: suppressed },
          'health check failed on this host, not the backend: no verdict, the backend keeps its status',
        ),
      ),
    );
    // Probes waiting for in-flight slots: dead backends are marked down late. Saturation logged once per
    // interval at most, and its end when its start was logged.
    const backlogLog = rateLimited(LOCAL_ERROR_LOG_MS);
    let saturationLogged = false;
    this.monitor.on('backlog', (b: BacklogChange) => {
      if (b.saturated) {
        saturationLogged = false;
        backlogLog((suppressed) => {
          saturationLogged = true;
          this.log.warn(
            { maxInFlight: b.maxInFlight, backlog: b.backlog, delayedByCap: b.delayedByCap, suppressedSinceLast: suppressed }, // prettier-ignore
            'health probes wait for in-flight slots: checks run late, dead backends are marked down late',
          );
        });
      } else if (saturationLogged)
        this.log.info(
          { seconds: Math.round(b.durationMs) / 1000, delayedByCap: b.delayedByCap },
          'health probes no longer wait for in-flight slots',
        );
    });
    this.monitor.start();
  }
}
