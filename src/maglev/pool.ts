// TableBuilder: Maglev tables built off the event loop (a worker_threads pool) or in-thread, same result.
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { isArrayBuffer } from 'node:util/types';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { buildMappedTable, buildTable, MaglevBackend, redirectSkipped, TableValues } from './maglev';

/** Builds Maglev tables: the result equals buildTable({ backends, size }) (member index per slot), or with `as`
 * mapTable of it (each member's value per slot: done where the table is built, off the caller's thread). */
export interface TableBuilder {
  build(backends: readonly MaglevBackend[], size: number, as?: TableValues): Promise<Uint32Array>;
  /** build() with `as`, and beside it that table with the members whose values are in `skip` redirected
   * (redirectSkipped): both made where the builder builds, so the caller's thread neither copies nor allocates. */
  buildPair(
    backends: readonly MaglevBackend[],
    size: number,
    as: TableValues,
    skip: readonly number[],
  ): Promise<TablePair>;
  /** Runs of at most this many tables are better built in-thread than through this builder (its start-up or
   * round trip costs more); absent: the reconciler's default (INLINE_TABLES). */
  readonly inlineUpTo?: number;
  /** Optional: threads running now (0 or absent: none). While some run, a small run is built by them too (their code
   * is warm; the caller's thread, which built no table yet, would build its first ones unoptimized: ~25 ms for a
   * 1,001-member table against ~3 ms). */
  readonly running?: number;
  /** Optional: from now on (`on`) every table is built on the caller's thread (in slices, as a small one is), none by
   * the builder's threads: those running retire when idle as usual, and no build starts them again; `false`: back to
   * the threads. */
  keepInThread?(on: boolean): void;
  /** Optional: starts the builder's threads now, so that the first builds find them running (they retire when
   * idle as usual); given `tableSizes` (the sizes about to be built), only if the threads would build one of them. */
  warm?(tableSizes?: Iterable<number>): void;
  /** Optional: ends the builder's threads now if none builds (as if idle for long), resolving once they ended and
   * their memory was given back (e.g. a daemon's start, whose burst is over, right after it reports ready); the next
   * build starts them again. */
  retireNow?(): Promise<void>;
  /** Optional: the caller is done with a table this builder gave (no reference to it is kept anywhere): its memory
   * may serve a later build, instead of being garbage the collector must find (external memory drives V8's full
   * collections: a burst of 1,000 tables at 65,537 slots allocated 256 MiB). */
  recycle?(table: Uint32Array): void;
  /** Optional: a recycled buffer of `bytes` (recycle()) for a table made on the caller's thread (e.g. one read
   * back from the datapath), taken out of the spares; undefined when none is kept. */
  spare?(bytes: number): ArrayBuffer | undefined;
  /** Stops the builder: pending and later builds reject. */
  close(): Promise<void>;
}

/** A table and the same table with some members redirected (TableBuilder.buildPair). */
export interface TablePair {
  natural: Uint32Array;
  redirected: Uint32Array;
}

/** The table of a build request, mapped through `as`, and redirected too when `skip` is given (the one rule of
 * what both builders do). */
function built(
  backends: readonly MaglevBackend[],
  size: number,
  as: TableValues | undefined,
  skip: readonly number[] | undefined,
  buffers: readonly ArrayBuffer[] = [],
): { table: Uint32Array; redirected?: Uint32Array } {
  const fits = (b: ArrayBuffer | undefined): ArrayBuffer | undefined =>
    b !== undefined && b.byteLength === size * 4 ? b : undefined;
  const into = fits(buffers[0]);
  const table =
    as === undefined ? buildTable({ backends, size }, into) : buildMappedTable({ backends, size }, as, into);
  if (skip === undefined) return { table };
  const second = fits(buffers[1]);
  const out = second === undefined ? new Uint32Array(table.length) : new Uint32Array(second);
  return { table, redirected: redirectSkipped(table, skip, out) };
}

/** Milliseconds of inline building between event-loop turns. */
const INLINE_SLICE_MS = 5;
let inlineTurnAt = performance.now();
/** Inline builds run one after another, in call order. */
let inlineTail: Promise<unknown> = Promise.resolve();

/** In-thread builder (tests, CLI): builds on the caller's thread, one after another, giving the event loop a
 * turn before a build once INLINE_SLICE_MS of building ran since the last turn (timers and I/O wait no longer). */
export const inlineTableBuilder: TableBuilder = {
  build: (backends, size, as) => inline(backends, size, as, undefined).then((r) => r.table),
  buildPair: (backends, size, as, skip) =>
    inline(backends, size, as, skip).then((r) => ({ natural: r.table, redirected: r.redirected! })),
  close: () => Promise.resolve(),
};

function inline(
  backends: readonly MaglevBackend[],
  size: number,
  as: TableValues | undefined,
  skip: readonly number[] | undefined,
  buffers?: readonly ArrayBuffer[],
): Promise<ReturnType<typeof built>> {
  const out = inlineTail.then(async () => {
    if (performance.now() - inlineTurnAt >= INLINE_SLICE_MS) {
      await nextTurn();
      inlineTurnAt = performance.now();
    }
    return built(backends, size, as, skip, buffers);
  });
  inlineTail = out.catch(() => undefined);
  return out;
}

/** What build() and buildPair() ask of the pool: members, size, `as` and `skip` (absent: undefined). */
type BuildRequest = [
  backends: readonly MaglevBackend[],
  size: number,
  as: TableValues | undefined,
  skip: readonly number[] | undefined,
];

/** A build request sent to a table worker: the members as two arrays (cheaper to clone than objects). */
export interface TableJob {
  id: number;
  names: string[];
  weights: number[];
  size: number;
  /** TableBuilder.build's `as` (absent: member indices) */
  as?: TableValues;
  /** buildPair's `skip`: the answer carries the redirected table too */
  skip?: number[];
  /** Recycled memory for the table (and the redirected one), 4 bytes per slot, transferred: the answer carries
   * them back as its tables (recycle()). */
  buffers?: ArrayBuffer[];
}

/** A table worker's answer: the table (its buffer transferred) or the build's error. */
export type TableJobResult =
  | { id: number; table: Uint32Array; redirected?: Uint32Array }
  | { id: number; error: { name: string; message: string } };

/** The job's work, done where it runs (the worker calls this). */
export function runTableJob(job: TableJob): { table: Uint32Array; redirected?: Uint32Array } {
  const backends = job.names.map((name, i) => ({ name, weight: job.weights[i]! }));
  return built(backends, job.size, job.as, job.skip, job.buffers);
}

export interface WorkerTableBuilderOptions {
  /** Worker threads at most (default: available parallelism, capped at MAX_THREADS). */
  threads?: number;
  /** Workers idle this long (ms) are terminated; the next build starts them again (default IDLE_MS). */
  idleMs?: number;
  /** The worker's entry script (default: pool-worker.js next to this file, i.e. in dist/). */
  workerPath?: string;
  /** Called when the pool retires after work (idle for `idleMs`, or retireNow()): its workers, if any ran, have
   * ended and its spare buffers are let go, so their memory is free then (e.g. to give it back to the kernel). Also
   * after builds made on the caller's thread only (`inThreadUpTo`): their garbage is the burst's too. */
  onRetired?: () => void;
  /** Tables of at most this many slots are built on the caller's thread (in slices, as inlineTableBuilder does),
   * with this pool's recycled buffers, never by a worker (default 0: every table by the workers). See
   * IN_THREAD_SLOTS. */
  inThreadUpTo?: number;
  /** Called with each recycled buffer the pool lets go (past SPARE_BUFFERS, or the spares dropped when idle, or at
   * close), which nothing else references: e.g. to free its memory now (native freeArrayBuffer). Absent: the buffers
   * are garbage for V8's next full collection, which a burst's external memory does not trigger soon (bench:k8s: 18
   * MB of dropped table buffers per burst of 1,000 Services stayed resident until the workers ended). */
  free?: (buffer: ArrayBuffer) => void;
}

/** The daemon's `inThreadUpTo`: tables of up to 16,381 slots (Kubernetes Services' default size) are built on its own
 * thread. Such a table builds in ~0.3 ms (20 or 160 members; 65,537 slots: ~1.4 ms), while a worker costs memory
 * (its own V8 heap and Node environment: two idle workers +19 MB of RSS in a bare node, +33 MB once they have built
 * tables; in the daemon 140–145 MB between bursts with the two alive against 101–103 MB once they ended).
 * bench:k8s (1,000 Services x 20 endpoints, five A B pairs): RSS peak 136–139 MB in-thread against 159–175 MB through
 * the two workers; the rolling-update burst's median 1.83 s against 1.73 s (the event loop is busy through a burst). */
export const IN_THREAD_SLOTS = 16_381;
/** Threads at most by default: building is CPU-bound, and the daemon's own thread writes the maps. */
export const MAX_THREADS = 4;
/** Added to the nice value of the table workers' threads (at most 19; the event loop's thread keeps the daemon's). */
export const WORKER_NICE = 10;
/** Idle time (ms) before the workers go (an idle daemon does not pay their memory). */
export const IDLE_MS = 10_000;
/** Builds posted to one worker before it answers: hides the message round trip. */
const PER_WORKER = 2;
/** Recycled table buffers kept at most (256 KiB each at 65,537 slots): sized for two batches of 32 tables and their
 * redirected copies (reconcile's TABLE_BATCH when it was set), given back after their write, to serve the next
 * batches' builds. */
export const SPARE_BUFFERS = 128;
/** Recycled buffers are let go once no build ran for this long (they serve bursts; an idle daemon keeps none). */
export const SPARE_KEEP_MS = 1000;

interface Pending {
  job: TableJob;
  resolve(r: { table: Uint32Array; redirected?: Uint32Array }): void;
  reject(e: Error): void;
}

interface Slot {
  worker: Worker;
  /** Jobs posted to this worker, not answered yet. */
  inFlight: Map<number, Pending>;
  /** Set once the worker failed or exited: it takes no more jobs. */
  dead: boolean;
  /** The worker's thread id (the Worker reports -1 once it has exited). */
  threadId: number;
}

/**
 * A pool of worker threads running buildTable. Workers start on demand and are terminated after `idleMs`
 * without work. A worker that dies fails the builds it held (a clear error) and is replaced by the next
 * build. Results are transferred, not copied. close() rejects what is queued and terminates the workers.
 */
export class WorkerTableBuilder implements TableBuilder {
  readonly threads: number;
  private readonly idleMs: number;
  private readonly workerPath: string;
  private readonly onRetired: (() => void) | undefined;
  private readonly inThreadUpTo: number;
  /** keepInThread(true): every build on the caller's thread. */
  private inThreadOnly = false;
  /** Builds on the caller's thread (inThreadUpTo) not finished yet. */
  private inThreadPending = 0;
  /** Some build ran on the caller's thread since the last retirement. */
  private builtInThread = false;
  private readonly free: ((buffer: ArrayBuffer) => void) | undefined;
  private readonly slots: Slot[] = [];
  private readonly queue: Pending[] = [];
  private nextId = 1;
  private idleTimer: NodeJS.Timeout | null = null;
  private spareTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private deaths = 0;
  /** Recycled table buffers by byte length (recycle()), handed to the next builds of that size. */
  private readonly spares = new Map<number, ArrayBuffer[]>();
  private spareCount = 0;

  constructor(o: WorkerTableBuilderOptions = {}) {
    const threads = o.threads ?? Math.min(availableParallelism(), MAX_THREADS);
    if (!Number.isSafeInteger(threads) || threads < 1)
      throw new RangeError(`threads: ${threads} is not a positive integer`);
    const idleMs = o.idleMs ?? IDLE_MS;
    if (!Number.isFinite(idleMs) || idleMs < 0)
      throw new RangeError(`idleMs: ${idleMs} is not a non-negative number`);
    this.threads = threads;
    this.idleMs = idleMs;
    this.workerPath = o.workerPath ?? join(__dirname, 'pool-worker.js');
    this.onRetired = o.onRetired;
    const inThreadUpTo = o.inThreadUpTo ?? 0;
    if (!Number.isSafeInteger(inThreadUpTo) || inThreadUpTo < 0)
      throw new RangeError(`inThreadUpTo: ${inThreadUpTo} is not a non-negative integer`);
    this.inThreadUpTo = inThreadUpTo;
    this.free = o.free;
    if (!existsSync(this.workerPath))
      throw new Error(
        `Maglev table worker script ${this.workerPath} is missing (build: npx tsc -p tsconfig.build.json)`,
      );
  }

  /** Worker threads running now (0 while idle). */
  get running(): number {
    return this.slots.length;
  }

  /** Recycled table buffers held for later builds (recycle()). */
  get spareBuffers(): number {
    return this.spareCount;
  }

  /** Workers that died (failed, or exited without being told to). */
  get workerDeaths(): number {
    return this.deaths;
  }

  build(backends: readonly MaglevBackend[], size: number, as?: TableValues): Promise<Uint32Array> {
    return this.post(backends, size, as, undefined).then((r) => r.table);
  }

  buildPair(
    backends: readonly MaglevBackend[],
    size: number,
    as: TableValues,
    skip: readonly number[],
  ): Promise<TablePair> {
    return this.post(backends, size, as, skip).then((r) => {
      if (r.redirected === undefined)
        throw new Error('Maglev table worker answered without the redirected table');
      return { natural: r.table, redirected: r.redirected };
    });
  }

  private post(...request: BuildRequest): Promise<{ table: Uint32Array; redirected?: Uint32Array }> {
    const [backends, size, as, skip] = request;
    if (this.closed) return Promise.reject(new Error('Maglev table builder is closed'));
    if (this.inThreadOnly || size <= this.inThreadUpTo) return this.buildInThread(...request);
    return new Promise((resolve, reject) => {
      const job: TableJob = {
        id: this.nextId++,
        names: backends.map((b) => b.name),
        weights: backends.map((b) => b.weight),
        size,
        ...(as === undefined ? {} : { as }),
        ...(skip === undefined ? {} : { skip: [...skip] }),
      };
      this.queue.push({ job, resolve, reject });
      this.dispatch();
    });
  }

  /** A build on the caller's thread (a small table: inThreadUpTo), into recycled buffers where some are kept. */
  private buildInThread(
    ...[backends, size, as, skip]: BuildRequest
  ): Promise<{ table: Uint32Array; redirected?: Uint32Array }> {
    this.clearIdle();
    this.inThreadPending++;
    this.builtInThread = true;
    const buffers = this.takeSpare(size * 4, skip === undefined ? 1 : 2);
    return inline(backends, size, as, skip, buffers)
      .then((r) => {
        if (this.closed) throw new Error('Maglev table builder closed before the build finished');
        return r;
      })
      .finally(() => {
        this.inThreadPending--;
        this.armIdle();
      });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.clearIdle();
    this.dropSpares();
    const err = new Error('Maglev table builder closed before the build finished');
    for (const p of this.queue.splice(0)) p.reject(err);
    const slots = this.slots.splice(0);
    for (const s of slots) {
      s.dead = true;
      for (const p of s.inFlight.values()) p.reject(err);
      s.inFlight.clear();
    }
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }

  /** Posts queued jobs to the least busy workers, starting workers up to `threads`. */
  private dispatch(): void {
    this.clearIdle();
    while (this.queue.length > 0) {
      let slot: Slot | null = null;
      for (const s of this.slots) if (slot === null || s.inFlight.size < slot.inFlight.size) slot = s;
      if ((slot === null || slot.inFlight.size > 0) && this.slots.length < this.threads) slot = this.spawn();
      if (slot === null || slot.inFlight.size >= PER_WORKER) break;
      const p = this.queue.shift()!;
      slot.inFlight.set(p.job.id, p);
      const buffers = this.takeSpare(p.job.size * 4, p.job.skip === undefined ? 1 : 2);
      if (buffers.length > 0) p.job.buffers = buffers;
      slot.worker.postMessage(p.job, buffers);
    }
    this.armIdle();
  }

  private spawn(): Slot {
    const worker = new Worker(this.workerPath);
    // The pool never keeps the process alive: an idle daemon exits when everything else is done.
    worker.unref();
    const slot: Slot = { worker, inFlight: new Map(), dead: false, threadId: worker.threadId };
    worker.on('message', (m: TableJobResult) => this.onResult(slot, m));
    worker.on('error', (e: Error) => this.onDeath(slot, `failed: ${e.message}`));
    worker.on('exit', (code: number) => this.onDeath(slot, `exited with code ${code}`));
    this.slots.push(slot);
    return slot;
  }

  private onResult(slot: Slot, m: TableJobResult): void {
    const p = slot.inFlight.get(m.id);
    if (p === undefined) return;
    slot.inFlight.delete(m.id);
    if ('table' in m) p.resolve(m);
    else {
      // The same error class the in-thread build throws (RangeError/TypeError naming the field).
      const Ctor =
        m.error.name === 'RangeError' ? RangeError : m.error.name === 'TypeError' ? TypeError : Error;
      p.reject(new Ctor(m.error.message));
    }
    this.dispatch();
  }

  /** A worker failed or exited: its builds fail, and the next dispatch starts a replacement. */
  private onDeath(slot: Slot, how: string): void {
    if (slot.dead) return;
    slot.dead = true;
    const at = this.slots.indexOf(slot);
    if (at >= 0) this.slots.splice(at, 1);
    if (this.closed) return;
    const held = [...slot.inFlight.values()];
    slot.inFlight.clear();
    this.deaths++;
    for (const p of held)
      p.reject(new Error(`Maglev table worker (thread ${slot.threadId}) ${how} during the build`));
    // Terminate in case it only failed (an 'error' is followed by 'exit'; terminate is then a no-op).
    void slot.worker.terminate().catch(() => undefined);
    this.dispatch();
  }

  keepInThread(on: boolean): void {
    this.inThreadOnly = on;
  }

  warm(tableSizes?: Iterable<number>): void {
    if (this.closed || this.inThreadOnly) return;
    if (tableSizes !== undefined && ![...tableSizes].some((size) => size > this.inThreadUpTo)) return;
    this.clearIdle();
    while (this.slots.length < this.threads) this.spawn();
    this.armIdle();
  }

  recycle(table: Uint32Array): void {
    const buf = table.buffer;
    // Only a whole, plain buffer (one a build made), not a view into a bigger one.
    if (this.closed || !isArrayBuffer(buf)) return;
    if (table.byteOffset !== 0 || table.byteLength !== buf.byteLength || buf.byteLength === 0) return;
    const list = this.spares.get(buf.byteLength);
    if (list?.includes(buf)) return;
    // Past the cap: let go now (freed where the owner frees), not kept.
    if (this.spareCount >= SPARE_BUFFERS) return this.free?.(buf);
    if (list === undefined) this.spares.set(buf.byteLength, [buf]);
    else list.push(buf);
    this.spareCount++;
    // Dropped SPARE_KEEP_MS after the last recycle or build: also when tables made on the caller's thread (spare())
    // come back while no worker works, which arms no idle timer.
    if (this.spareTimer !== null) this.spareTimer.refresh();
    else if (this.queue.length === 0 && !this.slots.some((s) => s.inFlight.size > 0)) {
      this.spareTimer = setTimeout(() => this.dropSpares(), Math.min(SPARE_KEEP_MS, this.idleMs));
      this.spareTimer.unref();
    }
  }

  spare(bytes: number): ArrayBuffer | undefined {
    return this.takeSpare(bytes, 1)[0];
  }

  /** Up to `n` recycled buffers of `bytes`, taken out of the spares (transferred with a job). */
  private takeSpare(bytes: number, n: number): ArrayBuffer[] {
    const list = this.spares.get(bytes);
    if (list === undefined) return [];
    const out = list.splice(Math.max(0, list.length - n));
    this.spareCount -= out.length;
    return out;
  }

  private armIdle(): void {
    if (this.closed || this.queue.length > 0 || this.inThreadPending > 0) return;
    if (this.slots.length === 0 && !this.builtInThread) return;
    if (this.slots.some((s) => s.inFlight.size > 0)) return;
    this.clearIdle(); // a spare timer recycle() armed meanwhile is replaced, not left to fire
    this.spareTimer = setTimeout(() => this.dropSpares(), Math.min(SPARE_KEEP_MS, this.idleMs));
    this.spareTimer.unref();
    this.idleTimer = setTimeout(() => void this.retire(), this.idleMs);
    this.idleTimer.unref();
  }

  private clearIdle(): void {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    if (this.spareTimer !== null) clearTimeout(this.spareTimer);
    this.idleTimer = null;
    this.spareTimer = null;
  }

  private dropSpares(): void {
    this.spareTimer = null;
    const free = this.free;
    if (free !== undefined) for (const list of this.spares.values()) for (const b of list) free(b);
    this.spares.clear();
    this.spareCount = 0;
  }

  async retireNow(): Promise<void> {
    if (this.closed || this.queue.length > 0 || this.inThreadPending > 0) return;
    if (this.slots.some((s) => s.inFlight.size > 0)) return;
    this.clearIdle();
    await this.retire();
  }

  /** Terminates the idle workers (the next build starts new ones); resolves once they ended (onRetired ran, when
   * workers ran or builds were made on the caller's thread since the last retirement). */
  private retire(): Promise<void> {
    this.idleTimer = null;
    this.dropSpares();
    const slots = this.slots.splice(0);
    for (const s of slots) s.dead = true;
    const worked = slots.length > 0 || this.builtInThread;
    this.builtInThread = false;
    return Promise.all(slots.map((s) => s.worker.terminate().catch(() => undefined))).then(() => {
      if (!this.closed && worked) this.onRetired?.();
    });
  }
}
