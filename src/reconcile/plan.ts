// Reconcile planning: a pure diff of actual datapath state against desired state into ordered operations.
import type { BackendSpec, DatapathConfig, VipKey, VipSpec } from '../datapath/types';
import { canonicalIp } from '../model/ip';
import { DesiredState, DesiredVip, fromDesiredState } from './desired';
import { runAll, runSliced } from './steps';
import { IdTable } from './table';
import { vipKeyText } from './ids';
import { IdMap, IdSet } from './id-map';
import { DEFAULT_CT_TIMEOUTS } from '../datapath/layout';
import { DEFAULTS } from '../model/defaults';

/** The datapath's GUE port when its config names none (PEAK_GUE_DEFAULT_PORT). */
const DEFAULT_GUE_PORT = DEFAULTS.encap.guePort;

/** What the datapath holds (as read back, or as mirrored after our own writes); addresses canonical. */
export interface ActualState {
  config: DatapathConfig | null;
  vips: VipSpec[];
  /** As read (a list), or indexed by id (the Reconciler's mirror: planned from without a copy). */
  backends: readonly BackendSpec[] | ReadonlyMap<number, BackendSpec>;
  /** Table per VIP id: as read back, or the IdTable we installed; null or absent: none installed. */
  tables: ReadonlyMap<number, Uint32Array | IdTable | null>;
  /** VIP id -> whether its read-back table (a Uint32Array in `tables`) holds the desired slots, compared
   * beforehand off the planner (Reconciler: through its table builder); absent: the planner compares. */
  tableMatches?: ReadonlyMap<number, boolean>;
}

export type Op =
  | { op: 'configure'; config: DatapathConfig }
  | {
      /** Writes of one desired VIP's backends (its memberships' ids), in its order. */
      op: 'upsertBackends';
      /** The desired VIP whose memberships these backend ids are. */
      vipName: string;
      /** The desired backends themselves (BackendSpecs with more fields; desired states are immutable): the VIP's
       * own list when every one is written, so a first sync copies none. One op object per backend had been 27 MB
       * of a 512 x 1000 start's peak, and the Reconciler's mirror keeps what it applied. */
      backends: readonly BackendSpec[];
      /** Why each is written, by position: BACKEND_NEW, BACKEND_STATE or BACKEND_ADDRESS. */
      reasons: Uint8Array;
    }
  | { op: 'deleteVip'; key: VipKey; id: number }
  | { op: 'upsertVip'; vip: VipSpec; reason: 'new' | 'changed' }
  | {
      op: 'installTable';
      vipId: number;
      vipName: string;
      table: IdTable;
      reason: 'new' | 'changed';
      /** Installed just before this table, in the same batch (reconcile/second-chance.ts); absent: left alone. */
      previous?: PreviousTableOp;
    }
  | { op: 'deleteBackend'; id: number }
  /** A previous table on its own (expiry, a setting changed, adoption): after every current table. */
  | ({ op: 'installPreviousTable'; vipId: number; vipName: string } & PreviousTableOp);

/** The previous table to install (built when applied, like current tables); null clears it. */
export interface PreviousTableOp {
  build: (() => Uint32Array | null) | null;
  reason: PreviousReason;
}

/** Why a previous table is written: a table change, a retained change expired, settings or backends changed
 * (hints on or off), a write that failed or a table adopted from an earlier run. */
export type PreviousReason = 'change' | 'expiry' | 'settings' | 'retry';

/**
 * Operations in a safe order: configure; create/update backends (before tables name them); delete
 * VIPs that went away (frees their ids and tables); create/update VIPs; install changed tables (each an
 * atomic swap); delete backends no table names any more. Unchanged VIPs produce no operation.
 */
export type Plan = Op[];

/** True when a datapath holding config `a` needs no configure to hold `b` (addresses and MACs compared canonically). */
export function sameConfig(a: DatapathConfig | null, b: DatapathConfig): boolean {
  if (a === null) return false;
  const src = (x: DatapathConfig['encapSourceV4']): string =>
    x === null ? '' : `${canonicalIp(x.prefix) ?? x.prefix}/${x.prefixLength}`;
  const ct = (x: DatapathConfig): string =>
    `${x.conntrackTimeouts?.tcp ?? DEFAULT_CT_TIMEOUTS.tcp}/${x.conntrackTimeouts?.udp ?? DEFAULT_CT_TIMEOUTS.udp}`;
  return (
    ct(a) === ct(b) &&
    a.ownMac.toLowerCase() === b.ownMac.toLowerCase() &&
    a.nextHopMac.toLowerCase() === b.nextHopMac.toLowerCase() &&
    a.mtu === b.mtu &&
    (a.guePort ?? DEFAULT_GUE_PORT) === (b.guePort ?? DEFAULT_GUE_PORT) &&
    src(a.encapSourceV4) === src(b.encapSourceV4) &&
    src(a.encapSourceV6) === src(b.encapSourceV6)
  );
}

/** The installed table holds the desired slots (an IdTable we installed compares by signature). */
export function sameTable(actual: Uint32Array | IdTable | null | undefined, desired: IdTable): boolean {
  if (actual === null || actual === undefined) return false;
  if (actual instanceof IdTable) return actual === desired || actual.signature === desired.signature;
  return desired.equals(actual);
}

/** Whether the datapath's backend entry `h` already holds desired backend `b` (no upsertBackend needed). */
export function sameBackend(h: BackendSpec, b: BackendSpec): boolean {
  return h.address === b.address && h.state === b.state && (h.encap ?? 'ipip') === (b.encap ?? 'ipip');
}

/** Why an upsertBackends op writes a backend: not in the datapath yet. */
export const BACKEND_NEW = 0;
/** Its state changed (only). */
export const BACKEND_STATE = 1;
/** Its address or its encapsulation changed: the backend is reached another way. */
export const BACKEND_ADDRESS = 2;

/** The upsertBackends op for one desired VIP's backends against what the datapath holds (none if it holds them all). */
function backendOps(plan: Plan, vip: DesiredVip, have: (id: number) => BackendSpec | undefined): void {
  const all = vip.backends;
  const reasons = new Uint8Array(all.length);
  // null while every backend so far is written: then the op takes the VIP's own list
  let some: BackendSpec[] | null = null;
  let n = 0;
  for (let i = 0; i < all.length; i++) {
    const b = all[i]!;
    const h = have(b.id);
    if (h !== undefined && sameBackend(h, b)) {
      some ??= all.slice(0, i);
      continue;
    }
    reasons[n++] =
      h === undefined
        ? BACKEND_NEW
        : h.address !== b.address || h.state === b.state
          ? BACKEND_ADDRESS
          : BACKEND_STATE;
    some?.push(b);
  }
  if (n === 0) return;
  plan.push({
    op: 'upsertBackends',
    vipName: vip.name,
    backends: some ?? all,
    reasons: n === all.length ? reasons : reasons.slice(0, n),
  });
}

/** Datapath writes an op stands for: one per backend of an upsertBackends op, else one. */
export const opWrites = (op: Op): number => (op.op === 'upsertBackends' ? op.backends.length : 1);

/** deleteVip, upsertVip and installTable ops (O(VIPs): tables we installed compare by identity). Yields
 * after each table compared slot by slot (a read-back table). The loops are plain functions: V8 optimises a
 * long-running generator body poorly. */
function* vipOps(
  plan: Plan,
  actual: Iterable<VipSpec>,
  tables: ActualState['tables'],
  matches: ActualState['tableMatches'],
  desired: DesiredState,
): Generator<void, void, void> {
  const run: VipOpsRun = {
    plan,
    actualVips: vipDeletes(plan, actual, desired),
    tables,
    matches,
    desired: desired.vips,
    tableOps: [],
    next: 0,
  };
  while (run.next < run.desired.length) {
    vipOpsFrom(run);
    yield;
  }
  // Every VIP write before the first table: the VIP writes form one run (one VIP index rebuild in the
  // kernel) and the tables one run (swapped in batches).
  for (const op of run.tableOps) plan.push(op);
}

/** deleteVip ops; returns the actual VIPs that stay, by key text. */
function vipDeletes(plan: Plan, actual: Iterable<VipSpec>, desired: DesiredState): Map<string, VipSpec> {
  const actualVips = new Map<string, VipSpec>();
  for (const v of actual) actualVips.set(vipKeyText(v.key), v);
  const wantedVips = new Set(desired.vips.map((v) => vipKeyText(v.spec.key)));
  const desiredKeyById = new Map(desired.vips.map((v) => [v.spec.id, vipKeyText(v.spec.key)]));
  for (const [key, v] of actualVips) {
    // Gone, or holding an id that a desired VIP needs under another key.
    const claimant = desiredKeyById.get(v.id);
    if (!wantedVips.has(key) || (claimant !== undefined && claimant !== key)) {
      plan.push({ op: 'deleteVip', key: v.key, id: v.id });
      actualVips.delete(key);
    }
  }
  return actualVips;
}

interface VipOpsRun {
  plan: Plan;
  actualVips: ReadonlyMap<string, VipSpec>;
  tables: ActualState['tables'];
  matches: ActualState['tableMatches'];
  desired: readonly DesiredVip[];
  /** installTable ops, pushed after every VIP write. */
  tableOps: Op[];
  /** The next desired VIP to look at. */
  next: number;
}

/** upsertVip and installTable ops from `run.next` on, up to and including the next table compared slot by
 * slot (a slicing point). */
function vipOpsFrom(run: VipOpsRun): void {
  const { plan, tableOps } = run;
  while (run.next < run.desired.length) {
    const vip = run.desired[run.next++]!;
    const have = run.actualVips.get(vipKeyText(vip.spec.key));
    const resized = have !== undefined && have.tableSize !== vip.spec.tableSize;
    const changed =
      have !== undefined &&
      (have.id !== vip.spec.id ||
        resized ||
        have.flags.sourceHash !== vip.spec.flags.sourceHash ||
        have.flags.noConntrack !== vip.spec.flags.noConntrack ||
        (have.flags.stateless ?? false) !== (vip.spec.flags.stateless ?? false));
    if (have === undefined) plan.push({ op: 'upsertVip', vip: vip.spec, reason: 'new' });
    else if (changed) plan.push({ op: 'upsertVip', vip: vip.spec, reason: 'changed' });
    // A new id or size invalidates the installed table; otherwise compare slots.
    const fresh = have === undefined || have.id !== vip.spec.id || resized;
    if (fresh) {
      tableOps.push({
        op: 'installTable',
        vipId: vip.spec.id,
        vipName: vip.name,
        table: vip.table,
        reason: 'new',
      });
      continue;
    }
    const installed = run.tables.get(vip.spec.id);
    const read = installed instanceof Uint32Array;
    const matched = read ? run.matches?.get(vip.spec.id) : undefined;
    if (!(matched ?? sameTable(installed, vip.table)))
      tableOps.push({
        op: 'installTable',
        vipId: vip.spec.id,
        vipName: vip.name,
        table: vip.table,
        reason: 'changed',
      });
    if (read && matched === undefined) return;
  }
}

/** Milliseconds of planning between event-loop turns in the async planners. */
export const PLAN_SLICE_MS = 5;

// Per-backend loops live in plain functions: V8 optimises a long-running generator body poorly (no on-stack
// replacement into it), a function called once per VIP well.

/** The index of the first element of `list` from `from` on that `set` lacks; list.length if none. */
function nextNotIn<T>(list: readonly T[], set: ReadonlySet<T>, from: number): number {
  let i = from;
  while (i < list.length && set.has(list[i]!)) i++;
  return i;
}

function addIds(ids: IdSet, vip: DesiredVip): void {
  for (const b of vip.backends) ids.add(b.id);
}

/** deleteBackend ops for the backends of `gone` (a VIP of the previous state) that are not wanted (and marks
 * them wanted: each is deleted once). */
function deleteUnwanted(
  plan: Plan,
  gone: DesiredVip,
  wanted: IdSet,
  held: ReadonlyMap<number, BackendSpec>,
): void {
  for (const b of gone.backends)
    if (!wanted.has(b.id) && held.has(b.id)) {
      plan.push({ op: 'deleteBackend', id: b.id });
      wanted.add(b.id);
    }
}

function* deleteAllUnwanted(
  plan: Plan,
  held: Iterable<BackendSpec>,
  wanted: IdSet,
): Generator<void, void, void> {
  let i = 0;
  for (const b of held) {
    if (!wanted.has(b.id)) plan.push({ op: 'deleteBackend', id: b.id });
    if ((i++ & STEP_ITEMS) === STEP_ITEMS) yield;
  }
}

/** plan = diff(actual, desired). Pure. */
export function planReconcile(actual: ActualState, desired: DesiredState): Plan {
  return runAll(planReconcileSteps(actual, desired));
}

/** planReconcile in slices with event-loop turns between them; the inputs must not change until it resolves. */
export function planReconcileAsync(
  actual: ActualState,
  desired: DesiredState,
  sliceMs = PLAN_SLICE_MS,
): Promise<Plan> {
  return runSliced(planReconcileSteps(actual, desired), sliceMs);
}

function* planReconcileSteps(actual: ActualState, desired: DesiredState): Generator<void, Plan, void> {
  const plan: Plan = [];
  if (desired.datapathConfig !== null && !sameConfig(actual.config, desired.datapathConfig))
    plan.push({ op: 'configure', config: desired.datapathConfig });

  // Indexed by id in an IdMap, not a Map: a Map of 512,000 ids rehashed all of it in one step (45-70 ms); the mirror's
  // own index is taken as it is (spreading it into a list first was another ~60 ms step).
  let actualBackends: ReadonlyMap<number, BackendSpec>;
  if (isList(actual.backends)) {
    const byId = new IdMap<BackendSpec>();
    for (let i = 0; i < actual.backends.length; i++) {
      const b = actual.backends[i]!;
      byId.set(b.id, b);
      if ((i & STEP_ITEMS) === STEP_ITEMS) yield;
    }
    actualBackends = byId;
  } else actualBackends = actual.backends;
  const wantedBackends = new IdSet();
  for (const vip of desired.vips) {
    addIds(wantedBackends, vip);
    backendOps(plan, vip, (id) => actualBackends.get(id));
    yield;
  }
  yield* vipOps(plan, actual.vips, actual.tables, actual.tableMatches, desired);
  yield* deleteAllUnwanted(
    plan,
    isList(actual.backends) ? actual.backends : actualBackends.values(),
    wantedBackends,
  );
  return plan;
}

const isList = (b: ActualState['backends']): b is readonly BackendSpec[] => Array.isArray(b);

/** Items per step of a pass over every backend (512,000 at 512 x 1000: ~0.1 ms of work per 4096). */
const STEP_ITEMS = 4095;

/** What the datapath holds, indexed (the Reconciler's mirror of its own writes). */
export interface IndexedActualState {
  config: DatapathConfig | null;
  vips: Iterable<VipSpec>;
  backends: ReadonlyMap<number, BackendSpec>;
  tables: ActualState['tables'];
  tableMatches?: ActualState['tableMatches'];
}

/**
 * The plan planReconcile would give (deleteBackend ops possibly in another order), in time that grows
 * with what changed: VIP objects shared by `previous` and `desired` are known to need no backend op.
 * Preconditions (else the result is wrong): `actual` is exactly what applying `previous` left, and both
 * states are unmutated desiredState results (fromDesiredState), so every VIP and backend id is unique.
 */
export function planSince(actual: IndexedActualState, desired: DesiredState, previous: DesiredState): Plan {
  checkSince(desired, previous);
  return runAll(planSinceSteps(actual, desired, previous));
}

/** planSince in slices with event-loop turns between them (every VIP changed at 512 x 1000 is 512,000
 * memberships); the inputs must not change until it resolves. Throws at once on bad input, like planSince. */
export function planSinceAsync(
  actual: IndexedActualState,
  desired: DesiredState,
  previous: DesiredState,
  sliceMs = PLAN_SLICE_MS,
): Promise<Plan> {
  checkSince(desired, previous);
  return runSliced(planSinceSteps(actual, desired, previous), sliceMs);
}

function checkSince(desired: DesiredState, previous: DesiredState): void {
  if (!fromDesiredState(desired) || !fromDesiredState(previous))
    throw new TypeError('planSince: desired and previous must be unmutated desiredState results');
}

function* planSinceSteps(
  actual: IndexedActualState,
  desired: DesiredState,
  previous: DesiredState,
): Generator<void, Plan, void> {
  const plan: Plan = [];
  if (desired.datapathConfig !== null && !sameConfig(actual.config, desired.datapathConfig))
    plan.push({ op: 'configure', config: desired.datapathConfig });
  const kept = new Set<DesiredVip>(previous.vips);
  // Backends of unchanged VIP objects were written when `previous` was applied and nothing touched them.
  const wantedChanged = new IdSet();
  const have = (id: number): BackendSpec | undefined => actual.backends.get(id);
  for (
    let i = nextNotIn(desired.vips, kept, 0);
    i < desired.vips.length;
    i = nextNotIn(desired.vips, kept, i + 1)
  ) {
    const vip = desired.vips[i]!;
    addIds(wantedChanged, vip);
    backendOps(plan, vip, have);
    yield;
  }
  yield* vipOps(plan, actual.vips, actual.tables, actual.tableMatches, desired);
  // The datapath holds exactly previous's backends: only those of VIPs that changed can be unwanted now.
  const current = new Set(desired.vips);
  for (
    let i = nextNotIn(previous.vips, current, 0);
    i < previous.vips.length;
    i = nextNotIn(previous.vips, current, i + 1)
  ) {
    deleteUnwanted(plan, previous.vips[i]!, wantedChanged, actual.backends);
    yield;
  }
  return plan;
}

export interface ReconcileSummary {
  configured: boolean;
  vipsCreated: number;
  vipsUpdated: number;
  vipsDeleted: number;
  /** Desired VIPs that needed no operation at all. */
  vipsUnchanged: number;
  tablesInstalled: number;
  backendsCreated: number;
  backendsStateChanged: number;
  backendsUpdated: number;
  backendsDeleted: number;
  /** Operations applied (the plan less the failed and the skipped ones), an upsertBackends op counted once per
   * backend (each a write). */
  operations: number;
  /** Operations not tried because an earlier operation of their VIP failed (backends counted one by one). */
  skipped: number;
  /** Operations that failed, each naming the desired VIPs it leaves not programmed. */
  failures: ReconcileFailure[];
  durationMs: number;
  /** Previous tables written (set or cleared): with a changed table or on their own. */
  previousTablesWritten: number;
  /** Tables made from the one installed (more members down, redirected in it: IdTable.holdInstalled) instead
   * of a Maglev build. */
  tablesFromInstalled: number;
  /** When a retained table change expires (ms, the reconciler's clock): reconcile again then to write the
   * VIP's previous table without it. null: none retained. */
  nextPreviousExpiry: number | null;
}

/** One failed operation. The VIPs it names keep what they had before and are retried by the next reconcile. */
export interface ReconcileFailure {
  /** A backend's write that failed is reported on its own, as an upsertBackend. */
  op: Exclude<Op['op'], 'upsertBackends'> | 'upsertBackend';
  /** What the operation was about: "config", a VIP key ("10.0.0.10:80/tcp") or "backend <id>". */
  target: string;
  /** Desired VIPs (names) left not programmed; empty when only clean-up of what is no longer desired failed. */
  vips: string[];
  error: string;
}

/** Counts a plan's operations into a summary (durationMs left 0). */
export function summarisePlan(plan: Plan, desired: DesiredState): ReconcileSummary {
  const s: ReconcileSummary = {
    configured: false,
    vipsCreated: 0,
    vipsUpdated: 0,
    vipsDeleted: 0,
    vipsUnchanged: 0,
    tablesInstalled: 0,
    backendsCreated: 0,
    backendsStateChanged: 0,
    backendsUpdated: 0,
    backendsDeleted: 0,
    operations: plan.length,
    skipped: 0,
    failures: [],
    durationMs: 0,
    previousTablesWritten: 0,
    tablesFromInstalled: 0,
    nextPreviousExpiry: null,
  };
  const touchedVips = new Set<number>();
  for (const op of plan)
    switch (op.op) {
      case 'configure':
        s.configured = true;
        break;
      case 'upsertBackends':
        for (let i = 0; i < op.reasons.length; i++) {
          const r = op.reasons[i];
          if (r === BACKEND_NEW) s.backendsCreated++;
          else if (r === BACKEND_STATE) s.backendsStateChanged++;
          else s.backendsUpdated++;
        }
        s.operations += op.backends.length - 1;
        break;
      case 'deleteVip':
        s.vipsDeleted++;
        break;
      case 'upsertVip':
        if (op.reason === 'new') s.vipsCreated++;
        else s.vipsUpdated++;
        touchedVips.add(op.vip.id);
        break;
      case 'installTable':
        s.tablesInstalled++;
        touchedVips.add(op.vipId);
        break;
      case 'deleteBackend':
        s.backendsDeleted++;
        break;
      case 'installPreviousTable':
        s.previousTablesWritten++;
        break;
    }
  // Backend state flips touch a backend, not its VIP: the VIP stays "unchanged" (no VIP or table write).
  s.vipsUnchanged = desired.vips.filter((v) => !touchedVips.has(v.spec.id)).length;
  return s;
}
