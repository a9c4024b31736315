// Applying plans to a Datapath: reconcile() (stateless: read, diff, apply) and Reconciler (mirrors its writes).
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { BackendSpec, Datapath, VipSpec } from '../datapath/types';
import { inlineTableBuilder, TableBuilder } from '../maglev/pool';
import { canonicalIp } from '../model/ip';
import { DesiredState, fromDesiredState } from './desired';
import { PreviousOwners, PreviousOwnerView } from './second-chance';
import { IdTable } from './table';
import { IdMap } from './id-map';
import { readTableOrNone, vipKeyText } from './ids';
import {
  ActualState,
  Op,
  opWrites,
  Plan,
  ReconcileFailure,
  planReconcileAsync,
  planSinceAsync,
  sameBackend,
  ReconcileSummary,
  summarisePlan,
} from './plan';

const canon = (a: string): string => canonicalIp(a) ?? a;

/** Reads everything the planner compares (every VIP's table included); addresses canonicalised. */
export async function readActual(dp: Datapath): Promise<ActualState & { backends: BackendSpec[] }> {
  const config = await dp.readConfig();
  const slicer = new Slicer(SLICE_MS);
  const vips = (await dp.listVips()).map((v) => ({ ...v, key: { ...v.key, address: canon(v.key.address) } }));
  const listed = await dp.listBackends();
  const backends: typeof listed = [];
  for (let i = 0; i < listed.length; i++) {
    if ((i & 1023) === 0) await slicer.turn();
    backends.push({ ...listed[i]!, address: canon(listed[i]!.address) });
  }
  const tables = new Map<number, Uint32Array | null>();
  for (const v of vips) {
    await slicer.turn();
    tables.set(v.id, await readTableOrNone(dp, v.id));
  }
  return { config, vips, backends, tables };
}

async function applyOp(dp: Datapath, op: Op): Promise<void> {
  switch (op.op) {
    case 'configure':
      return dp.configure(op.config);
    case 'upsertBackends':
      for (const b of op.backends) await dp.upsertBackend(b);
      return;
    case 'deleteVip':
      return dp.deleteVip(op.key);
    case 'upsertVip':
      return dp.upsertVip(op.vip);
    case 'installTable':
      return dp.installTable(op.vipId, op.table.ids());
    case 'deleteBackend':
      return dp.deleteBackend(op.id);
    case 'installPreviousTable':
      return dp.installPreviousTable(op.vipId, op.build?.() ?? null);
  }
}

/** The datapath as a plan found it (live: the Reconciler's mirror), so a failed VIP's installed table is kept whole. */
export interface InstalledView {
  /** By VIP key text (vipKeyText). */
  vips: ReadonlyMap<string, VipSpec>;
  tables: ActualState['tables'];
}

export interface ApplyOptions {
  /** Sees each operation that succeeded; `previousOk`: whether its previous table (if it had one) was written. */
  onApplied?: (op: Op, previousOk: boolean) => void;
  /** Sees each previous-table write that failed when its op did not succeed otherwise (a standalone one, or
   * one attached to a table that then failed too). Such failures name no VIP: hints are degraded, not lost
   * forwarding. */
  onPreviousFailed?: (op: Op) => void;
  /** Without it, a backend that a failed VIP's table still names is tried for deletion (and refused). */
  installed?: InstalledView;
  /** Work between event-loop turns (default SLICE_MS). */
  sliceMs?: number;
  /** Tables per installTables call (default TABLE_BATCH). */
  tableBatch?: number;
  /** Builds the Maglev tables (default inline, on this thread): each batch's tables, and what its previous
   * tables are computed from, are built while the batch before is written. */
  builder?: TableBuilder;
  /** Called once when the first tables' builds went to the (worker) builder, before anything else is applied:
   * this thread then waits for them, so work of the caller's (e.g. the daemon's health targets) fits there. */
  whileBuilding?: () => void;
  /** Tables whose builds the caller started before the plan existed: applyPlan takes their holds over with its own
   * early ones (each released once its batch is prepared, any left at the end). */
  early?: EarlyHolds;
}

/** Milliseconds of reconcile work between event-loop turns: the admin API, timers and signals wait no longer
 * than this plus one operation (a table build and write is ~10 ms at 65537 slots). */
export const SLICE_MS = 5;
/** Tables swapped per installTables call: each call waits one RCU grace period in the kernel, whatever its size
 * (measured: median 11–13 ms for 1, 16 or 64 tables), so 512 VIPs cost 16 waits, not 512. A batch holds its inner
 * maps (264 KiB each at 65537 slots, twice with previous tables) and its tables' buffers until the swap, and every
 * buffer a build needs while none has come back is new memory: at a start of 512 x 100 with 64 per batch the table
 * workers took ~95 new buffers, each of whose builds ran 3-8 ms instead of ~2 (its pages faulted in); with 32, ~63.
 * Start to ready, eight A B pairs: 2.21 s median against 2.41 s (7 of 8 pairs faster), CPU by ready 3.78 s against
 * 4.08 s, RSS peak 144 MB against 154 MB; 16 and 24 measured like 32. 16 then, not 32: a mass flip (512 x 1000 with
 * checks, every backend going down: tables redirected from read-back ones, a batch and the one prepared ahead each
 * holding a read-back buffer per table) peaked at 427 / 428 MB of RSS against 438 / 439 (A B A B); the 512 x 100
 * start 1.90-2.38 s against 2.08-2.28 s (four pairs), every VIP +1 / -1 backend 1.00-1.31 / 0.84-1.03 s against
 * 1.14-1.19 / 1.05-1.10 s. */
export const TABLE_BATCH = 16;
/** Backend writes per upsertBackends call (an event-loop turn between calls): one batch syscall each. 4096 at a
 * time held the event loop ~50 ms (encoding each, and recording each applied op). */
export const BACKEND_BATCH = 1024;
/** Runs of at most this many tables are built in-thread (~3 ms each at 65537 slots, an event-loop turn between
 * builds) while no worker runs: a worker start after the pool went idle (50-150 ms, and 20-40 MB of RSS while it
 * lives) would cost a small change more than it saves; deployments with few VIPs never start the workers. */
export const INLINE_TABLES = 16;
/** Batches of tables whose builds start before the plan's first writes (backends, VIPs): the workers build while
 * this thread writes, instead of starting when the writes are done. */
export const EARLY_BATCHES = 2;

/**
 * Builds started while the desired state is still computed (TableCache.onCreate): the workers build the first tables
 * while this thread assigns ids and plans (at a start of 512 x 100 they were idle ~0.3-0.4 s, from their start until
 * the plan's own early holds), and the plan's holds share these builds. At most `limit` tables (the plan's own early
 * batches: the buffers held are the same), and only while `builder` has threads running (a warm start or a burst: a
 * small change builds in-thread after the plan, as before). The caller releases what applyPlan did not take
 * (releaseAll, also when the desired state or the plan failed).
 */
export class EarlyHolds {
  readonly tables = new Set<IdTable>();
  constructor(
    private readonly builder: TableBuilder,
    private readonly limit = EARLY_BATCHES * TABLE_BATCH,
  ) {}

  /** Starts `t`'s build (a hold of it) if there is room and the builder's threads run. */
  readonly take = (t: IdTable): void => {
    if (this.tables.size >= this.limit || this.tables.has(t) || !((this.builder.running ?? 0) > 0)) return;
    this.tables.add(t);
    // a failed build: the hold is not taken (nothing to release); the plan's own hold reports the failure
    t.hold(this.builder).catch(() => void this.tables.delete(t));
  };

  releaseAll(): void {
    for (const t of [...this.tables]) if (this.tables.delete(t)) t.release();
  }
}

/** The builder for a run of `n` tables: in-thread when the run is small for `builder` (see INLINE_TABLES) and it
 * has no thread running (a running one has warm code and costs no start: TableBuilder.running). */
const builderFor = (n: number, builder: TableBuilder): TableBuilder =>
  n <= (builder.inlineUpTo ?? INLINE_TABLES) && !((builder.running ?? 0) > 0) ? inlineTableBuilder : builder;

type InstallTableOp = Extract<Op, { op: 'installTable' }>;

const isVipWrite = (op: Op): boolean => op.op === 'upsertVip' || op.op === 'deleteVip';

/** Gives the event loop a turn once `sliceMs` of work ran since the last one. */
class Slicer {
  private last = performance.now();
  constructor(private readonly sliceMs: number) {}

  async turn(): Promise<void> {
    if (performance.now() - this.last < this.sliceMs) return;
    await nextTurn();
    this.last = performance.now();
  }
}

/** A slicer's turn as a callback (for passes that take one). */
const turnEvery = (ms: number): (() => Promise<void>) => {
  const slicer = new Slicer(ms);
  return () => slicer.turn();
};

const opTarget = (op: Op): string => {
  switch (op.op) {
    case 'configure':
      return 'config';
    case 'upsertBackends':
      return op.backends.length === 1
        ? `backend ${op.backends[0]!.id}`
        : `${op.backends.length} backends of ${op.vipName}`;
    case 'deleteBackend':
      return `backend ${op.id}`;
    case 'deleteVip':
      return vipKeyText(op.key);
    case 'upsertVip':
      return vipKeyText(op.vip.key);
    case 'installTable':
      return `table of VIP ${op.vipId}`;
    case 'installPreviousTable':
      return `previous table of VIP ${op.vipId}`;
  }
};

/** Which desired VIPs (names) depend on an operation: a failure leaves exactly those not programmed.
 * O(VIPs) to build, not O(memberships): ops name their VIP (upsertBackend, installTable). */
class Dependants {
  private readonly all: string[];
  private readonly byKey = new Map<string, string>();
  private readonly byId = new Map<number, DesiredState['vips'][number]>();
  private readonly byName = new Map<string, DesiredState['vips'][number]>();

  constructor(desired: DesiredState) {
    this.all = desired.vips.map((v) => v.name);
    for (const v of desired.vips) {
      this.byKey.set(vipKeyText(v.spec.key), v.name);
      this.byId.set(v.spec.id, v);
      this.byName.set(v.name, v);
    }
  }

  /** The desired VIP of a name. */
  vip(name: string): DesiredState['vips'][number] | undefined {
    return this.byName.get(name);
  }

  of(op: Op): readonly string[] {
    switch (op.op) {
      case 'configure':
        // One config serves every VIP.
        return this.all;
      case 'upsertBackends':
        // Backend ids are per (VIP, backend) membership: one VIP.
        return [op.vipName];
      case 'deleteVip': {
        // Only a desired VIP that needs the freed id under another key depends on it.
        const claimant = this.byId.get(op.id);
        return claimant !== undefined && vipKeyText(claimant.spec.key) !== vipKeyText(op.key)
          ? [claimant.name]
          : [];
      }
      case 'upsertVip': {
        const name = this.byKey.get(vipKeyText(op.vip.key));
        return name === undefined ? [] : [name];
      }
      case 'installTable':
        return [op.vipName];
      case 'deleteBackend':
      case 'installPreviousTable':
        // A previous table that cannot be written degrades hints only: no VIP is withheld for it.
        return [];
    }
  }

  /** The desired key of a VIP name. */
  keyOf(name: string): string | undefined {
    const v = this.byName.get(name);
    return v === undefined ? undefined : vipKeyText(v.spec.key);
  }
}

/** Backend ids the installed tables of these VIP keys name (those backends must stay). */
function namedBy(installed: InstalledView, keys: Iterable<string>): Set<number> {
  const ids = new Set<number>();
  for (const key of keys) {
    const v = installed.vips.get(key);
    const t = v === undefined ? undefined : installed.tables.get(v.id);
    if (t === undefined || t === null) continue;
    for (const id of t instanceof IdTable ? t.ids() : t) ids.add(id);
  }
  return ids;
}

/**
 * Builds the previous tables attached to a batch of table installs, to go with the tables themselves in one
 * installTables call (each table and its previous table switch as one atomic pair in the datapath: issue 15).
 * Returns the previous table per entry (absent: none attached, or its build failed) and the build errors.
 */
async function buildPrevious<T extends { op: InstallTableOp }>(
  batch: readonly T[],
  slicer: Slicer,
): Promise<{ previous: Map<T, Uint32Array | null>; errors: Map<T, unknown> }> {
  const previous = new Map<T, Uint32Array | null>();
  const errors = new Map<T, unknown>();
  for (const b of batch) {
    const p = b.op.previous;
    if (p === undefined) continue;
    await slicer.turn();
    try {
      previous.set(b, p.build?.() ?? null);
    } catch (e) {
      errors.set(b, e);
    }
  }
  return { previous, errors };
}

/**
 * Installs a batch of tables with their previous tables as pairs. A pair the datapath refuses is retried
 * without its previous table (a previous table that cannot be written degrades hints only: the VIP's table
 * still goes in); such entries join `previousErrors`. Returns the per-entry result of the table itself.
 */
async function installPairs<T extends { op: InstallTableOp; ids: Uint32Array }>(
  dp: Datapath,
  batch: readonly T[],
  previous: Map<T, Uint32Array | null>,
  previousErrors: Map<T, unknown>,
): Promise<(Error | null)[]> {
  const install = async (entries: readonly T[], withPrevious: boolean): Promise<(Error | null)[]> => {
    try {
      return await dp.installTables(
        entries.map((b) =>
          withPrevious && previous.has(b)
            ? { vipId: b.op.vipId, table: b.ids, previous: previous.get(b)! }
            : { vipId: b.op.vipId, table: b.ids },
        ),
      );
    } catch (e) {
      return entries.map(() => e as Error);
    }
  };
  const results = await install(batch, true);
  const retry = batch.filter((b, k) => results[k] !== null && previous.has(b));
  if (retry.length === 0) return results;
  const again = await install(retry, false);
  retry.forEach((b, k) => {
    const at = batch.indexOf(b);
    if (again[k] === null) previousErrors.set(b, results[at]);
    results[at] = again[k]!;
  });
  return results;
}

type PreviousOp = Extract<Op, { op: 'installPreviousTable' }>;
type UpsertBackendsOp = Extract<Op, { op: 'upsertBackends' }>;
type DeleteVipOp = Extract<Op, { op: 'deleteVip' }>;

/** A chunk of operations whose tables are built and held (see IdTable.hold) until release(). */
interface Prepared<T> {
  ops: readonly T[];
  /** Operations whose own table could not be built: the build's error. */
  errors: Map<T, unknown>;
  release(): void;
}

/**
 * Holds the tables a chunk of operations will need, built through `builder` (concurrently): `own` (its
 * failure is the operation's) and `extra` tables (a failure there is left to the code that uses them).
 */
/** The table a VIP has installed now, read back (into a spare buffer of `builder`'s when it keeps one), and the
 * IdTable it was installed from (null: none usable). */
type InstalledTable = (builder: TableBuilder) => Promise<{ from: IdTable; table: Uint32Array } | null>;

async function prepare<T>(
  ops: readonly T[],
  builder: TableBuilder,
  tablesOf: (op: T) => { own: IdTable | null; extra: readonly IdTable[]; installed?: InstalledTable },
  slicer?: Slicer,
): Promise<Prepared<T> & { fromInstalled: number }> {
  const held: IdTable[] = [];
  const errors = new Map<T, unknown>();
  const hold = (t: IdTable): Promise<void> => t.hold(builder).then(() => void held.push(t));
  const tables = ops.map((op) => ({ op, ...tablesOf(op) }));
  // Made from the installed table where it qualifies (IdTable.holdInstalled), one after another: each read and
  // redirect is ~1 ms on this thread, and the event loop gets its turns between them. The reads reuse the
  // builder's spare buffers and give them back on release: 256 KiB of new memory per table was a full garbage
  // collection every ~250 tables (V8 counts it as external memory) and 64 page faults each.
  const made = new Set<T>();
  for (const t of tables) {
    if (t.own === null || t.installed === undefined) continue;
    await slicer?.turn();
    const r = await t.installed(builder).catch(() => null);
    if (r === null) continue;
    if (t.own.holdInstalled(r.from, r.table, builder)) {
      held.push(t.own);
      made.add(t.op);
    } else builder.recycle?.(r.table);
  }
  await Promise.all(
    tables.map(async ({ op, own, extra }) => {
      await Promise.all([
        own === null || made.has(op) ? null : hold(own).catch((e: unknown) => void errors.set(op, e)),
        ...extra.map((t) => hold(t).catch(() => undefined)),
      ]);
    }),
  );
  return { ops, errors, fromInstalled: made.size, release: () => held.forEach((t) => t.release()) };
}

/** Prepares chunk k+1 while chunk k is consumed; every prepared chunk is released after use. */
async function pipelined<T>(
  chunks: readonly (readonly T[])[],
  prep: (ops: readonly T[]) => Promise<Prepared<T>>,
  consume: (ready: Prepared<T>) => Promise<void>,
): Promise<void> {
  let ahead = chunks.length > 0 ? prep(chunks[0]!) : null;
  try {
    for (let k = 0; k < chunks.length; k++) {
      const ready = await ahead!;
      ahead = k + 1 < chunks.length ? prep(chunks[k + 1]!) : null;
      try {
        await consume(ready);
      } finally {
        ready.release();
      }
    }
  } finally {
    // Only after a throw: what was prepared ahead is let go.
    void ahead?.then((p) => p.release());
  }
}

function chunk<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let k = 0; k < items.length; k += size) out.push(items.slice(k, k + size));
  return out;
}

/** Per installTable op with a previous table to build: the installed table it replaces, as planning saw it
 * (the VIP's current table under its key), when that is a table we installed (read-back ones need no build). */
function oldTablesOf(plan: Plan, deps: Dependants, installed: InstalledView): Map<Op, IdTable> {
  const out = new Map<Op, IdTable>();
  for (const op of plan) {
    if (op.op !== 'installTable' || !op.previous?.build) continue;
    const key = deps.keyOf(op.vipName);
    const v = key === undefined ? undefined : installed.vips.get(key);
    const t = v === undefined ? undefined : installed.tables.get(v.id);
    if (t instanceof IdTable) out.set(op, t);
  }
  return out;
}

/**
 * Applies a plan VIP by VIP: an operation that fails marks the desired VIPs depending on it failed, their
 * later operations are skipped (they keep what they had), and every other VIP's operations still run. A
 * failed `configure` fails every VIP. Never throws for an operation; the failures are in the summary.
 */
export async function applyPlan(
  dp: Datapath,
  plan: Plan,
  desired: DesiredState,
  o: ApplyOptions = {},
): Promise<ReconcileSummary> {
  const started = performance.now();
  const deps = new Dependants(desired);
  const failedVips = new Set<string>();
  const failures: ReconcileFailure[] = [];
  /** Keys of VIPs whose installed table may still be in use after a failure. */
  const keptKeys = new Set<string>();
  let kept: Set<number> | null = null;
  const applied: Op[] = [];
  let skipped = 0;
  const slicer = new Slicer(o.sliceMs ?? SLICE_MS);
  /** `backend`: the one backend of an upsertBackends op whose write failed (reported on its own). */
  const failed = (op: Op, vips: readonly string[], e: unknown, backend?: BackendSpec): void => {
    for (const v of vips) {
      failedVips.add(v);
      const key = deps.keyOf(v);
      if (key !== undefined) keptKeys.add(key);
    }
    if (op.op === 'deleteVip') keptKeys.add(vipKeyText(op.key));
    failures.push({
      op: op.op === 'upsertBackends' ? 'upsertBackend' : op.op,
      target: backend === undefined ? opTarget(op) : `backend ${backend.id}`,
      vips: [...vips],
      error: (e as Error)?.message ?? String(e),
    });
  };
  let previousWritten = 0;
  const succeeded = (op: Op, previousOk = true): void => {
    applied.push(op);
    o.onApplied?.(op, previousOk);
  };
  const previousFailed = (op: Op, vipId: number, e: unknown): void => {
    failures.push({
      op: 'installPreviousTable',
      target: `previous table of VIP ${vipId}`,
      vips: [],
      error: (e as Error)?.message ?? String(e),
    });
  };
  const builder = o.builder ?? inlineTableBuilder;
  const batchSize = o.tableBatch ?? TABLE_BATCH;
  // Nothing failed (the common case): no dependants looked up (a profile of a 512 x 100 start: 15.7 ms for 51,200 upserts).
  const isFailed = (op: Op): boolean =>
    failedVips.size > 0 &&
    (deps.of(op).some((v) => failedVips.has(v)) ||
      (op.op === 'installPreviousTable' && failedVips.has(op.vipName)));
  // The table each previous table is computed from (second-chance.ts took it from the view planning saw).
  const oldTables = o.installed === undefined ? new Map<Op, IdTable>() : oldTablesOf(plan, deps, o.installed);
  let fromInstalled = 0;
  /**
   * A table with members down whose VIP has one of ours installed with the same natural table: made from that
   * one, read back (IdTable.holdInstalled), instead of built. Not with a previous table (that one needs the
   * natural table too).
   */
  const installedOf = (op: InstallTableOp): InstalledTable | undefined => {
    if (o.installed === undefined || op.previous !== undefined || !op.table.redirects) return undefined;
    const key = deps.keyOf(op.vipName);
    const v = key === undefined ? undefined : o.installed.vips.get(key);
    const from = v?.id === op.vipId ? o.installed.tables.get(op.vipId) : undefined;
    if (!(from instanceof IdTable) || from.naturalSignature !== op.table.naturalSignature) return undefined;
    return async (by) => {
      const spare = by.spare?.(op.table.size * 4);
      const table = await dp.readTable(op.vipId, spare === undefined ? undefined : new Uint32Array(spare));
      return table === null ? null : { from, table };
    };
  };

  /** Applies one operation (not a table install), recording its success or failure. */
  const applyOne = async (op: Op): Promise<void> => {
    if (isFailed(op)) {
      skipped++;
      return;
    }
    if (op.op === 'deleteBackend' && keptKeys.size > 0 && o.installed !== undefined) {
      kept ??= namedBy(o.installed, keptKeys);
      if (kept.has(op.id)) {
        skipped++;
        return;
      }
    }
    try {
      await applyOp(dp, op);
    } catch (e) {
      if (op.op === 'installPreviousTable') {
        previousFailed(op, op.vipId, e);
        o.onPreviousFailed?.(op);
      } else failed(op, deps.of(op), e);
      return;
    }
    if (op.op === 'installPreviousTable') previousWritten++;
    succeeded(op);
  };

  /** Applies a run of ops of one kind, `size` at a time, each slice in one batched datapath call (`call`: per op,
   * null or its error); an event-loop turn between slices. Ops of VIPs failed by then are skipped. */
  const applyBatched = async <T extends Op>(
    run: readonly T[],
    size: number,
    call: (ops: readonly T[]) => Promise<(Error | null)[]>,
  ): Promise<void> => {
    for (let from = 0; from < run.length; from += size) {
      if (from > 0) await slicer.turn();
      const live = run.slice(from, from + size).filter((r) => {
        if (!isFailed(r)) return true;
        skipped++;
        return false;
      });
      if (live.length === 0) continue;
      let results: (Error | null)[];
      try {
        results = await call(live);
      } catch (e) {
        results = live.map(() => e as Error);
      }
      live.forEach((r, k) => {
        const err = results[k];
        if (err) failed(r, deps.of(r), err);
        else succeeded(r);
      });
    }
  };

  /**
   * Writes a run of upsertBackends ops, BACKEND_BATCH backends per upsertBackends call (one batch syscall), an
   * event-loop turn between calls; a call may take the end of one VIP's backends and the start of the next's. The
   * backends of a VIP failed by then are skipped. A backend whose write fails fails its VIP (and is reported on its
   * own); the others of the same call are written and recorded as applied.
   */
  const upsertRun = async (run: readonly UpsertBackendsOp[]): Promise<void> => {
    let k = 0; // the op, and its next backend
    let at = 0;
    for (let call = 0; k < run.length; call++) {
      if (call > 0) await slicer.turn();
      const pieces: { op: UpsertBackendsOp; from: number; to: number }[] = [];
      const specs: BackendSpec[] = [];
      while (k < run.length && specs.length < BACKEND_BATCH) {
        const op = run[k]!;
        if (isFailed(op)) {
          skipped += op.backends.length - at;
          [k, at] = [k + 1, 0];
          continue;
        }
        const to = Math.min(op.backends.length, at + BACKEND_BATCH - specs.length);
        for (let x = at; x < to; x++) specs.push(op.backends[x]!);
        pieces.push({ op, from: at, to });
        [k, at] = to === op.backends.length ? [k + 1, 0] : [k, to];
      }
      if (specs.length === 0) continue;
      let results: (Error | null)[];
      try {
        results = await dp.upsertBackends(specs);
      } catch (e) {
        results = specs.map(() => e as Error);
      }
      let r = 0;
      for (const { op, from, to } of pieces) {
        const errors = results.slice(r, r + to - from);
        r += to - from;
        if (from === 0 && to === op.backends.length && errors.every((e) => !e)) {
          succeeded(op);
          continue;
        }
        const written: BackendSpec[] = [];
        const reasons: number[] = [];
        errors.forEach((err, x) => {
          const b = op.backends[from + x]!;
          if (err) failed(op, deps.of(op), err, b);
          else {
            written.push(b);
            reasons.push(op.reasons[from + x]!);
          }
        });
        if (written.length > 0) succeeded({ ...op, backends: written, reasons: Uint8Array.from(reasons) });
      }
    }
  };

  /** Installs one batch of tables whose builds are held (`ready`), with their previous tables as pairs. */
  const installBatch = async (ready: Prepared<InstallTableOp>): Promise<void> => {
    const batch: { op: InstallTableOp; ids: Uint32Array }[] = [];
    for (const op of ready.ops) {
      await slicer.turn();
      if (ready.errors.has(op)) {
        failed(op, deps.of(op), ready.errors.get(op));
        continue;
      }
      try {
        // Held until the batch is released (after its write): the held slots themselves, not a copy.
        batch.push({ op, ids: op.table.sharedIds() });
      } catch (e) {
        failed(op, deps.of(op), e);
      }
    }
    if (batch.length === 0) return;
    const { previous, errors: previousErrors } = await buildPrevious(batch, slicer);
    const results = await installPairs(dp, batch, previous, previousErrors);
    for (const [b, err] of previousErrors) previousFailed(b.op, b.op.vipId, err);
    previousWritten += batch.filter(
      (b, k) => b.op.previous !== undefined && !previousErrors.has(b) && results[k] === null,
    ).length;
    batch.forEach((b, k) => {
      const err = results[k];
      if (err) {
        failed(b.op, deps.of(b.op), err);
        if (previousErrors.has(b)) o.onPreviousFailed?.(b.op);
      } else succeeded(b.op, !previousErrors.has(b));
    });
  };

  // The first run of tables through the workers starts building now (its first EARLY_BATCHES batches), each held
  // until its batch is prepared: that batch's own holds then share these builds.
  const early = o.early?.tables ?? new Set<IdTable>();
  /** Ends the early holds of `tables` (default: all left). */
  const releaseEarly = (tables: Iterable<IdTable> = [...early]): void => {
    for (const t of tables) if (early.delete(t)) t.release();
  };
  {
    await slicer.turn(); // planning ran up to here
    const first = plan.findIndex((op) => op.op === 'installTable');
    let end = first;
    while (end >= 0 && end < plan.length && plan[end]!.op === 'installTable') end++;
    if (first >= 0 && builderFor(end - first, builder) !== inlineTableBuilder) {
      for (const op of plan.slice(
        first,
        Math.min(end, first + EARLY_BATCHES * batchSize),
      ) as InstallTableOp[]) {
        // a turn between requests: each copies its members to a worker (1,000 names: a whole run of them held the
        // loop ~40-70 ms at 512 x 1000)
        await slicer.turn();
        if (installedOf(op) !== undefined || early.has(op.table)) continue; // made from the installed table
        const held = op.table.hold(builder);
        early.add(op.table);
        // a failed build: the hold is not taken (nothing to release), and the op's own hold reports it
        held.catch(() => void early.delete(op.table));
      }
      try {
        o.whileBuilding?.();
      } catch (e) {
        releaseEarly();
        throw e;
      }
    }
  }

  for (let i = 0; i < plan.length; i++) {
    const op = plan[i]!;
    // A run of VIP writes is one burst for the datapath (the kernel rebuilds its VIP index on the next
    // event-loop turn): they are cheap, so no turn is given inside the run.
    if (!(isVipWrite(op) && i > 0 && isVipWrite(plan[i - 1]!))) await slicer.turn();
    if (op.op === 'upsertBackends' || op.op === 'deleteVip') {
      // A run of backend writes: one call per BACKEND_BATCH backends (one batch syscall in the kernel), a turn
      // between. A run of VIP deletions: one call (the datapath clears all their table slots in one batch).
      let j = i;
      while (j < plan.length && plan[j]!.op === op.op) j++;
      const run = plan.slice(i, j);
      i = j - 1;
      if (op.op === 'upsertBackends') await upsertRun(run as UpsertBackendsOp[]);
      else
        await applyBatched(run as DeleteVipOp[], run.length, (ops) => dp.deleteVips(ops.map((r) => r.key)));
      continue;
    }
    if (op.op !== 'installTable' && op.op !== 'installPreviousTable') {
      await applyOne(op);
      continue;
    }
    // A run of table installs (or of previous tables on their own): built through the builder batch by
    // batch, the next batch while this one is written (each table install is one map-in-map swap per batch).
    let j = i;
    while (j < plan.length && plan[j]!.op === op.op) j++;
    const run = plan.slice(i, j);
    i = j - 1;
    if (op.op === 'installTable') {
      const live: InstallTableOp[] = [];
      for (const r of run as InstallTableOp[])
        if (isFailed(r)) skipped++;
        else live.push(r);
      const by = builderFor(live.length, builder);
      try {
        await pipelined(
          chunk(live, batchSize),
          (ops) =>
            prepare(
              ops,
              by,
              (t) => {
                const old = t.previous?.build ? oldTables.get(t) : undefined;
                return { own: t.table, extra: old === undefined ? [] : [old], installed: installedOf(t) };
              },
              slicer,
            ).then((p) => {
              fromInstalled += p.fromInstalled;
              // held by the chunk now: the early holds of its tables end
              releaseEarly(ops.map((t) => t.table));
              return p;
            }),
          installBatch,
        );
      } finally {
        releaseEarly();
      }
    } else {
      const by = builderFor(run.length, builder);
      await pipelined(
        chunk(run as PreviousOp[], batchSize),
        (ops) =>
          prepare(ops, by, (p) => {
            const d = p.build ? deps.vip(p.vipName) : undefined;
            // A previous table's build failing degrades hints only: its table is held, not owned.
            return { own: null, extra: d === undefined ? [] : [d.table] };
          }),
        async (ready) => {
          for (const p of ready.ops) {
            await slicer.turn();
            await applyOne(p);
          }
        },
      );
    }
  }
  releaseEarly(); // (none left but after a failure of the plan's first run)
  const summary = summarisePlan(applied, desired);
  summary.previousTablesWritten = previousWritten;
  summary.tablesFromInstalled = fromInstalled;
  if (summary.operations !== plan.reduce((n, op) => n + opWrites(op), 0) || failures.length > 0) {
    // "Unchanged" means the plan had nothing for the VIP, not that its operations failed.
    summary.vipsUnchanged = summarisePlan(plan, desired).vipsUnchanged;
    summary.skipped = skipped;
    summary.failures = failures;
  }
  summary.durationMs = performance.now() - started;
  return summary;
}

/**
 * Stateless reconcile: read the datapath, plan, apply. Returns what it did; failed VIPs are in
 * `failures` (throws only when the datapath cannot be read).
 */
export async function reconcile(
  dp: Datapath,
  desired: DesiredState,
  o: { now?: number; builder?: TableBuilder } = {},
): Promise<ReconcileSummary> {
  const started = performance.now();
  const now = o.now ?? Date.now();
  const builder = o.builder ?? inlineTableBuilder;
  const mirror = await Mirror.read(dp);
  const tableMatches = await matchTables(mirror, desired, builder);
  // One call knows no history: previous tables found pinned are adopted as of now (second-chance.ts).
  const previous = new PreviousOwners();
  await previous.adoptFrom(dp, mirror.vips.values(), mirror.tables, now);
  const plan = await previous.plan(
    {
      plan: await planReconcileAsync({ ...mirror.snapshot(), tableMatches }, desired),
      actualVips: mirror.vips,
      tables: mirror.tables,
      desired,
      now,
    },
    turnEvery(SLICE_MS),
  );
  const summary = await applyPlan(dp, plan, desired, {
    onApplied: (op, ok) => {
      mirror.apply(op);
      previous.commit(op, ok);
    },
    onPreviousFailed: (op) => previous.previousFailed(op),
    installed: mirror,
    builder,
  });
  previous.settle(new Set(summary.failures.flatMap((f) => f.vips)));
  summary.nextPreviousExpiry = previous.nextExpiry();
  summary.durationMs = performance.now() - started;
  return summary;
}

/**
 * Per desired VIP whose installed table was read back (adoption): whether it holds the desired slots, each
 * desired table built through `builder` (the next batch while one is compared), so planning builds none.
 * undefined when no table needs comparing.
 */
export async function matchTables(
  actual: { vips: ReadonlyMap<string, VipSpec>; tables: ActualState['tables'] },
  desired: DesiredState,
  builder: TableBuilder,
  sliceMs = SLICE_MS,
): Promise<Map<number, boolean> | undefined> {
  const todo: { vip: DesiredState['vips'][number]; read: Uint32Array }[] = [];
  for (const vip of desired.vips) {
    const read = actual.tables.get(vip.spec.id);
    const had = actual.vips.get(vipKeyText(vip.spec.key));
    // Planning installs a fresh table for a new id or size whatever the slots: nothing to compare.
    if (read instanceof Uint32Array && had?.id === vip.spec.id && had.tableSize === vip.spec.tableSize)
      todo.push({ vip, read });
  }
  if (todo.length === 0) return undefined;
  const matches = new Map<number, boolean>();
  const slicer = new Slicer(sliceMs);
  const by = builderFor(todo.length, builder);
  await pipelined(
    chunk(todo, TABLE_BATCH),
    (items) => prepare(items, by, (t) => ({ own: t.vip.table, extra: [] })),
    async (ready) => {
      for (const t of ready.ops) {
        await slicer.turn();
        // A table that cannot be built matches nothing: planning installs it, and that install fails alone.
        matches.set(t.vip.spec.id, !ready.errors.has(t) && t.vip.table.equals(t.read));
      }
    },
  );
  return matches;
}

/** Mutable mirror of ActualState, updated op by op. */
class Mirror {
  config: ActualState['config'];
  vips: Map<string, VipSpec>;
  /** By id, in an array (IdMap: no hash-table entry per backend). */
  backends: IdMap<BackendSpec>;
  /** Changed only through setTable/deleteTable (they count the read-back tables). */
  readonly tables: Map<number, Uint32Array | IdTable | null>;
  /** Tables held as read back (Uint32Array): only those need comparing before planning (matchTables). */
  #readBack = 0;

  private constructor(a: Omit<ActualState, 'backends'>) {
    this.config = a.config;
    this.vips = new Map(a.vips.map((v) => [vipKeyText(v.key), v]));
    this.backends = new IdMap();
    this.tables = new Map();
    for (const [id, t] of a.tables) this.setTable(id, t);
  }

  /** The mirror of what `dp` holds, read now (backends indexed with event-loop turns: 512,000 at scale). */
  static async read(dp: Datapath): Promise<Mirror> {
    const a = await readActual(dp);
    const m = new Mirror(a);
    const slicer = new Slicer(SLICE_MS);
    for (let i = 0; i < a.backends.length; i++) {
      if ((i & 4095) === 0) await slicer.turn();
      m.backends.set(a.backends[i]!.id, a.backends[i]!);
    }
    return m;
  }

  /** Whether some table is held as read back (else every table is a desired IdTable we installed). */
  get holdsReadBack(): boolean {
    return this.#readBack > 0;
  }

  private setTable(id: number, t: Uint32Array | IdTable | null): void {
    this.deleteTable(id);
    this.tables.set(id, t);
    if (t instanceof Uint32Array) this.#readBack++;
  }

  private deleteTable(id: number): void {
    if (this.tables.get(id) instanceof Uint32Array) this.#readBack--;
    this.tables.delete(id);
  }

  apply(op: Op): void {
    switch (op.op) {
      case 'configure':
        this.config = op.config;
        break;
      case 'upsertBackends':
        for (const b of op.backends) this.backends.set(b.id, b);
        break;
      case 'deleteVip': {
        this.vips.delete(vipKeyText(op.key));
        this.deleteTable(op.id);
        break;
      }
      case 'upsertVip': {
        const old = this.vips.get(vipKeyText(op.vip.key));
        if (old !== undefined && (old.id !== op.vip.id || old.tableSize !== op.vip.tableSize))
          this.deleteTable(old.id);
        this.vips.set(vipKeyText(op.vip.key), op.vip);
        break;
      }
      case 'installTable':
        // Desired tables are immutable, so keeping the reference is safe and makes the next compare O(1).
        this.setTable(op.vipId, op.table);
        break;
      case 'deleteBackend':
        this.backends.delete(op.id);
        break;
    }
  }

  /**
   * After a plan for `desired` applied in full, a table still held as read back (Uint32Array) was found
   * equal to the desired one: keep the desired IdTable instead (O(1) compares later, the copy is freed).
   */
  settleTables(desired: DesiredState): void {
    if (this.#readBack === 0) return;
    for (const v of desired.vips)
      if (this.tables.get(v.spec.id) instanceof Uint32Array) this.setTable(v.spec.id, v.table);
  }

  /**
   * After a plan for `desired` applied in full: entries equal to a desired backend of a VIP not in `applied` (the
   * previous desired state; null: every VIP) point at that desired object. An entry the plan left alone may be an
   * older desired state's object (say health flipped but the state did not, as when failing open), which kept a
   * whole older generation alive: an object per membership, 47 MB at 512 x 1000. With event-loop turns.
   */
  async settleBackends(desired: DesiredState, applied: DesiredState | null): Promise<void> {
    const kept = new Set(applied?.vips ?? []);
    const slicer = new Slicer(SLICE_MS);
    for (const v of desired.vips) {
      if (kept.has(v)) continue;
      for (const b of v.backends) {
        const h = this.backends.get(b.id);
        if (h !== undefined && h !== b && sameBackend(h, b)) this.backends.set(b.id, b);
      }
      await slicer.turn();
    }
  }

  snapshot(): ActualState {
    return {
      config: this.config,
      vips: [...this.vips.values()],
      // the index itself, not a list made of it (~60 ms at 512,000): planning reads it before the mirror changes
      backends: this.backends,
      tables: this.tables,
    };
  }
}

export interface ReconcilerOptions {
  now?: () => number;
  builder?: TableBuilder;
}

/**
 * Long-lived reconciler for the daemon: reads the datapath once, then trusts a mirror of its own writes
 * (so a reload compares in memory, not against kernel maps). A failed VIP fails alone (see applyPlan);
 * any failure drops the mirror, so the next call reads the datapath again and retries. Calls are serialised.
 */
export class Reconciler {
  private mirror: Mirror | null = null;
  /** The desiredState result whose plan was last applied in full onto the mirror (incremental planning). */
  private applied: DesiredState | null = null;
  private chain: Promise<unknown> = Promise.resolve();
  /** Previous owners retained per VIP: they outlive the mirror (a re-read does not forget what changed when). */
  private readonly previous = new PreviousOwners();
  private readonly now: () => number;
  private readonly builder: TableBuilder;

  /** `now`: the clock of previous-owner retention (ms; default Date.now, the daemon's sync clock).
   * `builder`: builds the Maglev tables (default inline; the daemon passes a worker pool). */
  constructor(
    private readonly dp: Datapath,
    o: ReconcilerOptions = {},
  ) {
    this.now = o.now ?? Date.now;
    this.builder = o.builder ?? inlineTableBuilder;
  }

  /** Forget the mirror: the next reconcile reads the datapath (e.g. after someone else wrote to it). */
  resync(): void {
    this.mirror = null;
    this.applied = null;
  }

  /** What each VIP's previous table retains (metrics: peak_xdp_previous_table_*). */
  previousOwners(): PreviousOwnerView[] {
    return this.previous.view();
  }

  /** Plans against the mirror (or a fresh read) and applies; serialised with other calls. Failed VIPs are
   * in the summary's `failures`; throws only when the datapath cannot be read. */
  reconcile(
    desired: DesiredState,
    o: Pick<ApplyOptions, 'whileBuilding' | 'early'> = {},
  ): Promise<ReconcileSummary> {
    const run = this.chain.then(() => this.run(desired, o));
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** The plan the next reconcile would apply, without applying it. */
  async dryRun(desired: DesiredState): Promise<Plan> {
    await this.chain;
    if (this.mirror !== null) return this.plan(this.mirror, desired);
    // Previous-table writes are left out: planning them records what to commit.
    const mirror = await Mirror.read(this.dp);
    const tableMatches = await matchTables(mirror, desired, this.builder);
    return planReconcileAsync({ ...mirror.snapshot(), tableMatches }, desired);
  }

  /** Plans against the mirror: incrementally from the last applied state when both are desiredState results.
   * Read-back tables are compared with the desired ones through the builder first (not while planning). */
  private async plan(mirror: Mirror, desired: DesiredState): Promise<Plan> {
    // Only read-back tables are compared (a pass over every desired VIP): none once a sync applied in full.
    const tableMatches = mirror.holdsReadBack ? await matchTables(mirror, desired, this.builder) : undefined;
    if (this.applied !== null && fromDesiredState(this.applied) && fromDesiredState(desired))
      return planSinceAsync(
        {
          config: mirror.config,
          vips: mirror.vips.values(),
          backends: mirror.backends,
          tables: mirror.tables,
          tableMatches,
        },
        desired,
        this.applied,
      );
    return planReconcileAsync({ ...mirror.snapshot(), tableMatches }, desired);
  }

  private async run(
    desired: DesiredState,
    o: Pick<ApplyOptions, 'whileBuilding' | 'early'>,
  ): Promise<ReconcileSummary> {
    const started = performance.now();
    try {
      const now = this.now();
      if (this.mirror === null) {
        this.applied = null;
        this.mirror = await Mirror.read(this.dp);
        await this.previous.adoptFrom(this.dp, this.mirror.vips.values(), this.mirror.tables, now);
      }
      const mirror = this.mirror;
      const previous = this.previous;
      const plan = await previous.plan(
        {
          plan: await this.plan(mirror, desired),
          actualVips: mirror.vips,
          tables: mirror.tables,
          desired,
          now,
        },
        turnEvery(SLICE_MS),
      );
      const applied = this.applied;
      this.applied = null;
      const summary = await applyPlan(this.dp, plan, desired, {
        onApplied: (op, ok) => {
          mirror.apply(op);
          previous.commit(op, ok);
        },
        onPreviousFailed: (op) => previous.previousFailed(op),
        installed: mirror,
        builder: this.builder,
        whileBuilding: o.whileBuilding,
        early: o.early,
      });
      previous.settle(new Set(summary.failures.flatMap((f) => f.vips)));
      summary.nextPreviousExpiry = previous.nextExpiry();
      if (summary.failures.length > 0) {
        // A failed write may have half-happened: the next call reads the datapath and retries the VIPs.
        this.mirror = null;
      } else {
        mirror.settleTables(desired);
        await mirror.settleBackends(desired, applied);
        this.applied = fromDesiredState(desired) ? desired : null;
      }
      summary.durationMs = performance.now() - started;
      return summary;
    } catch (e) {
      this.mirror = null;
      this.applied = null;
      throw e;
    }
  }
}
