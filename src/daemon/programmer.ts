// Desired state -> datapath for the daemon: each sync's desired state reconciled, and what the last one left
// (the applied state, VIPs whose writes failed, failed clean-up, a reconcile that failed as a whole), logged
// as it changes.
import type { Datapath } from '../datapath/types';
import type { Logger } from '../log';
import { IN_THREAD_SLOTS, inlineTableBuilder, TableBuilder, WorkerTableBuilder } from '../maglev/pool';
import { EarlyHolds, INLINE_TABLES } from '../reconcile/reconciler';
import {
  desiredStateAsync,
  DesiredState,
  DesiredStateOptions,
  idStateFromDatapath,
  IdState,
  PreviousOwnerView,
  Reconciler,
  ReconcileFailure,
  ReconcileSummary,
  TableCache,
} from '../reconcile';

export class Programmer {
  private readonly log: Logger;
  private reconciler: Reconciler | null = null;
  /** Builds the Maglev tables: off the event loop (worker threads, started on demand), small ones (IN_THREAD_SLOTS)
   * on it. */
  private builder: TableBuilder | null = null;
  private readonly tables = new TableCache();
  /** Ids as the datapath holds them: an adopted state is reconciled without churn. */
  ids: IdState | undefined;
  /** The last desired state applied (null: none yet). */
  desired: DesiredState | null = null;
  lastReconcile: (ReconcileSummary & { at: string }) | null = null;
  /** The last reconcile failed as a whole (nothing written: e.g. the datapath could not be read). */
  reconcileError: string | null = null;
  /** Desired VIPs whose datapath writes failed in the last reconcile, by name: withdrawn and retried. */
  failedVips = new Map<string, ReconcileFailure>();
  /** Failed clean-up of what is no longer desired (no VIP withheld for it). */
  cleanupFailures: ReconcileFailure[] = [];

  private readonly trimMemory: ((o?: { collect?: boolean }) => boolean | void) | undefined;
  /** Set while the daemon's start retires the workers: it collects right after (trimMemory({ collect: true })). */
  private retiringAtStart = false;
  /** keepBuildsInThread() was called: so is every builder made from then on. */
  private buildsInThread = false;

  /** Frees the table buffers the pool lets go (Collaborators.freeBuffer). */
  private readonly freeBuffer: ((b: ArrayBuffer) => void) | undefined;
  /** Collaborators.memoryPressure (afterSync). */
  private readonly memoryPressure: (() => void) | undefined;
  /** Collaborators.collectIncrementally (collectAtStart). */
  private readonly collectIncrementally: (() => Promise<boolean>) | undefined;
  /** The main heap's used bytes now (default: process.memoryUsage().heapUsed). */
  private readonly heapUsed: () => number;

  constructor(o: {
    log: Logger;
    trimMemory?: (o?: { collect?: boolean }) => boolean | void;
    memoryPressure?: () => void;
    collectIncrementally?: () => Promise<boolean>;
    freeBuffer?: (b: ArrayBuffer) => void;
    heapUsed?: () => number;
  }) {
    this.log = o.log;
    this.trimMemory = o.trimMemory;
    this.memoryPressure = o.memoryPressure;
    this.collectIncrementally = o.collectIncrementally;
    this.freeBuffer = o.freeBuffer;
    this.heapUsed = o.heapUsed ?? (() => process.memoryUsage().heapUsed);
  }

  /** Table worker threads running now (0 without a builder or while idle). */
  get tableWorkers(): number {
    return this.builder?.running ?? 0;
  }

  /** Starts the table builder's threads now (a start: they are ready by the first sync; idle, they go), if they would
   * build a table of `tableSizes` (the sizes the start builds: not when all are small, IN_THREAD_SLOTS). */
  warm(tableSizes: Iterable<number>): void {
    this.builder ??= this.tableBuilder();
    this.builder.warm?.(tableSizes);
  }

  /** Every table built on the daemon's own thread from now on, none by the table workers (keepInThread): a big
   * daemon's after its start (see BUILDS_IN_THREAD_MSG). */
  keepBuildsInThread(): void {
    this.buildsInThread = true;
    this.builder?.keepInThread?.(true);
  }

  /** Ends the table builder's threads now unless they build (the start's burst is over: its memory is given back
   * right after the daemon reports ready, not IDLE_MS later; a later burst starts them again). */
  async retireWorkers(): Promise<void> {
    this.retiringAtStart = true;
    try {
      await this.builder?.retireNow?.();
    } finally {
      this.retiringAtStart = false;
    }
  }

  /** Programs `datapath` from now on, reading the ids it holds. */
  async use(datapath: Datapath): Promise<void> {
    // Another datapath replacing one: the builds of the old one's reconciles are dropped with their builder.
    if (this.reconciler !== null) {
      await this.builder?.close();
      this.builder = null;
    }
    this.builder ??= this.tableBuilder();
    this.reconciler = new Reconciler(datapath, { builder: this.builder });
    this.ids = await idStateFromDatapath(datapath);
  }

  /** Stops the table builder's workers (the daemon stops). */
  async close(): Promise<void> {
    await this.builder?.close();
    this.builder = null;
  }

  /** The table builder went idle after work (its workers, if any ran, ended): free memory is given back to the
   * kernel (trimMemory), after a collection of the burst's garbage where that pauses the event loop briefly
   * (retireCollects). */
  private retired(): void {
    if (this.trimMemory === undefined) return;
    const mb = (): number => Math.round(process.memoryUsage.rss() / 2 ** 20);
    const before = mb();
    const collect = retireCollects({
      heapUsed: process.memoryUsage().heapUsed,
      atStart: this.retiringAtStart,
    });
    const collected = this.trimMemory({ collect }) === true;
    this.log.debug({ rssMB: before, afterMB: mb(), collected }, WORKERS_ENDED_MSG);
  }

  /**
   * The start's garbage (its table buffers, the config's parse) collected and its memory given back (trimMemory)
   * right after the daemon reports ready: with a full collection while the heap is small, else incrementally and waited
   * for (startCollectsIncrementally). `how`: what ran (null: nothing to do it with); `collected`: whether a
   * collection ended (false: node without --expose-gc, or the wait timed out).
   */
  async collectAtStart(): Promise<{ how: 'full' | 'incremental' | null; collected: boolean }> {
    const trim = this.trimMemory;
    if (trim === undefined) return { how: null, collected: false };
    if (this.collectIncrementally !== undefined && startCollectsIncrementally(this.heapUsed())) {
      const collected = await this.collectIncrementally();
      trim();
      return { how: 'incremental', collected };
    }
    return { how: 'full', collected: trim({ collect: true }) === true };
  }

  /** After a sync of the running daemon (not the start's, collected right after ready): a burst's garbage is handed
   * to V8's incremental collector now (memoryPressure, where burstCollects says so), logged (BURST_COLLECT_MSG). */
  afterSync(summary: Pick<ReconcileSummary, 'tablesInstalled'>): void {
    if (this.memoryPressure === undefined || !isBurst(summary.tablesInstalled)) return;
    const heapUsed = this.heapUsed();
    const collect = burstCollects({ tablesInstalled: summary.tablesInstalled, heapUsed });
    if (collect) this.memoryPressure();
    this.log.debug(
      { tables: summary.tablesInstalled, heapMB: Math.round(heapUsed / 2 ** 20), collect },
      BURST_COLLECT_MSG,
    );
  }

  private tableBuilder(): TableBuilder {
    try {
      const builder = new WorkerTableBuilder({
        inThreadUpTo: IN_THREAD_SLOTS,
        onRetired: () => this.retired(),
        ...(this.freeBuffer === undefined ? {} : { free: this.freeBuffer }),
      });
      if (this.buildsInThread) builder.keepInThread(true);
      return builder;
    } catch (e) {
      // Run from sources (no built worker script): correct, but builds share the event loop.
      this.log.warn({ err: (e as Error).message }, 'Maglev tables are built on the main thread');
      return inlineTableBuilder;
    }
  }

  /** What each VIP's previous table retains (metrics); empty before use(). */
  previousOwners(): PreviousOwnerView[] {
    return this.reconciler?.previousOwners() ?? [];
  }

  /** Builds the desired state and reconciles the datapath to it; rejects when the reconcile failed as a whole.
   * `whileBuilding`: the reconciler's hook (ApplyOptions.whileBuilding), given the desired state. */
  async apply(
    o: Omit<DesiredStateOptions, 'ids' | 'tables'>,
    during: { whileBuilding?: (desired: DesiredState) => void } = {},
  ): Promise<{ desired: DesiredState; summary: ReconcileSummary }> {
    // The first new tables' builds start as the desired state makes them (while its threads run: a start, a burst).
    const early = this.builder === null ? null : new EarlyHolds(this.builder);
    try {
      // In slices: a whole new state at 512 x 1000 is seconds of work, and /healthz must not wait for it.
      this.tables.onCreate = early?.take ?? null;
      const desired = await desiredStateAsync({ ...o, ids: this.ids, tables: this.tables }).finally(() => {
        this.tables.onCreate = null;
      });
      const whileBuilding = during.whileBuilding;
      const summary = await this.reconciler!.reconcile(desired, {
        ...(early === null ? {} : { early }),
        ...(whileBuilding === undefined ? {} : { whileBuilding: () => whileBuilding(desired) }),
      });
      this.ids = desired.ids;
      this.noteFailOpen(this.desired, desired);
      this.desired = desired;
      this.reconcileError = null;
      this.noteFailures(summary.failures);
      this.lastReconcile = { ...summary, at: new Date().toISOString() };
      return { desired, summary };
    } catch (e) {
      this.reconcileError = (e as Error).message;
      throw e;
    } finally {
      early?.releaseAll();
    }
  }

  /** Records the VIPs the last reconcile left not programmed, logging each change. */
  private noteFailures(failures: ReconcileFailure[]): void {
    const failed = new Map<string, ReconcileFailure>();
    for (const f of failures) for (const v of f.vips) if (!failed.has(v)) failed.set(v, f);
    for (const [vip, f] of failed)
      if (!this.failedVips.has(vip))
        this.log.error(
          { vip, op: f.op, target: f.target, error: f.error },
          'VIP not programmed: its datapath writes failed; withdrawn, retrying',
        );
    for (const vip of this.failedVips.keys())
      if (!failed.has(vip) && this.desired?.vips.some((v) => v.name === vip))
        this.log.info({ vip }, 'VIP programmed after its failed writes; announced again if ready');
    const cleanup = failures.filter((f) => f.vips.length === 0);
    for (const f of cleanup)
      this.log.warn({ op: f.op, target: f.target, error: f.error }, 'datapath clean-up failed; retrying');
    this.failedVips = failed;
    this.cleanupFailures = cleanup;
  }

  /** Logs VIPs that start or stop failing open (every serving backend failing its checks, all forwarded to). */
  private noteFailOpen(before: DesiredState | null, after: DesiredState): void {
    const was = new Set(before?.failOpenVips ?? []);
    const now = new Set(after.failOpenVips);
    for (const v of after.vips)
      if (v.failOpen && !was.has(v.name))
        this.log.warn(
          { vip: v.name, backends: v.usableBackends },
          'VIP fails open: every backend fails its health checks; new flows go to all of them and the VIP ' +
            'stays announced (failOpen: false drops them instead)',
        );
    const present = new Set(after.vips.map((v) => v.name));
    for (const name of was)
      if (!now.has(name) && present.has(name))
        this.log.info({ vip: name }, 'VIP no longer fails open: health checks rule again');
  }
} /**
 * Heap in use up to which the table workers' retirement after a burst collects the burst's garbage first (its table
 * buffers above all; V8's memory reducer would take seconds more). A full collection pauses the event loop ~0.5-1 ms
 * per MB of heap here: 28-47 ms at 512 x 100 with health checks (55-80 MB), 70-80 ms at 1024 x 100, ~250 ms at
 * 512 x 1000; above this the pause is not worth it.
 */
export const RETIRE_COLLECT_MAX_HEAP = 96 * 2 ** 20;

/** Whether the daemon's start collects incrementally (V8 marking on helper threads and in steps, waited for) rather
 * than in one full collection: above RETIRE_COLLECT_MAX_HEAP, where a full one pauses the event loop too long (166-324
 * ms at 512 x 1000 with health checks, /healthz waiting; an incremental one there: ~9 ms final pause, steps of at
 * most ~16 ms, ~0.3 s of wall time). */
export function startCollectsIncrementally(heapUsed: number): boolean {
  return heapUsed > RETIRE_COLLECT_MAX_HEAP;
}

/** How long the start's housekeeping, right after ready, waits for an incremental collection (collectIncrementally)
 * at most. */
export const START_COLLECT_WAIT_MS = 5000;

/** Whether a retirement of the table workers collects first: not at the daemon's start (it collects right after,
 * whatever the heap), else while the heap is at most RETIRE_COLLECT_MAX_HEAP. */
export function retireCollects(o: { heapUsed: number; atStart: boolean }): boolean {
  return !o.atStart && o.heapUsed <= RETIRE_COLLECT_MAX_HEAP;
}

/**
 * Whether a sync's garbage is handed to V8's incremental collector right after it (Collaborators.memoryPressure): a
 * sync that built more tables than INLINE_TABLES (a burst, e.g. a Kubernetes rolling update or a reload of every
 * VIP), while the heap is at most RETIRE_COLLECT_MAX_HEAP. Without it V8 lets such garbage pile
 * up to its limit: bench:k8s (1,000 Services x 20, four A B pairs) RSS after three bursts 191-198 MB without it,
 * 145-155 with it, peak 196-201 against 163-170, /healthz max per burst alike (18-70 ms against 22-58); the bursts
 * after a collection build against a smaller heap, ~0.15 s slower. Not a full collection (a gc() there paused the
 * event loop 37-123 ms and was removed); above the bound V8's own schedule is left alone (marking a heap of hundreds
 * of MB is CPU the next changes would share).
 */
export function burstCollects(o: { tablesInstalled: number; heapUsed: number }): boolean {
  return isBurst(o.tablesInstalled) && o.heapUsed <= RETIRE_COLLECT_MAX_HEAP;
}

/** A sync that installed more tables than the reconciler builds without the pool (INLINE_TABLES): a burst. */
const isBurst = (tablesInstalled: number): boolean => tablesInstalled > INLINE_TABLES;

/** The debug log line after a burst's sync: whether V8 was asked to collect its garbage (burstCollects). */
export const BURST_COLLECT_MSG =
  "burst's sync done: its garbage handed to V8's incremental collector if small";

/**
 * The debug log line when a big daemon (its heap growth bounded: Daemon.boundHeapGrowth) keeps every table build on
 * its own thread once its start is over (Programmer.keepBuildsInThread): its bursts then run no table workers, whose
 * threads and heaps were ~35 MB of its RSS at their peak. Every backend failing at once at 512 VIPs x 1000
 * (`bench:control --part daemon --daemon-checking 200`, 512,000 health flips): RSS peak 462 MB against 498 MB with
 * the workers (interleaved pairs; see the README). The start keeps its workers (its ready time is the goal there), and
 * so does a small daemon (512 x 100: every VIP changed within 2 s needs them). The cost: a burst's tables take the
 * event loop's time instead of two workers' (in slices of a few ms, so /healthz and the checks go on).
 */
export const BUILDS_IN_THREAD_MSG = 'a big daemon: Maglev tables built on its own thread from now on';

/** The debug log line once the table builder went idle after a burst (its workers, if any ran, ended) and free
 * memory was given back (bench:k8s waits for it). */
export const WORKERS_ENDED_MSG = 'table builder idle (its workers ended): free memory given back';
