// Applying plans to a Datapath: reconcile() (stateless: read, diff, apply) and Reconciler (mirrors its writes).
import type { Datapath, VipSpec } from '../datapath/types';
import { canonicalIp } from '../model/ip';
import { DesiredState, fromDesiredState, IdTable } from './desired';
import { vipKeyText } from './ids';
import { ActualState, Op, Plan, planReconcile, planSince, ReconcileSummary, summarisePlan } from './plan';

const canon = (a: string): string => canonicalIp(a) ?? a;

/** Reads everything the planner compares (every VIP's table included); addresses canonicalised. */
export async function readActual(dp: Datapath): Promise<ActualState> {
  const config = await dp.readConfig();
  const vips = (await dp.listVips()).map((v) => ({ ...v, key: { ...v.key, address: canon(v.key.address) } }));
  const backends = (await dp.listBackends()).map((b) => ({ ...b, address: canon(b.address) }));
  const tables = new Map<number, Uint32Array | null>();
  for (const v of vips) tables.set(v.id, await dp.readTable(v.id));
  return { config, vips, backends, tables };
}

/** Thrown when an operation fails; `summary` counts what was applied before it. */
export class ReconcileError extends Error {
  constructor(
    readonly failed: Op,
    readonly summary: ReconcileSummary,
    cause: unknown,
  ) {
    super(
      `reconcile: ${failed.op} failed after ${summary.operations} operations: ${(cause as Error)?.message ?? cause}`,
      {
        cause,
      },
    );
    this.name = 'ReconcileError';
  }
}

async function applyOp(dp: Datapath, op: Op): Promise<void> {
  switch (op.op) {
    case 'configure':
      return dp.configure(op.config);
    case 'upsertBackend':
      return dp.upsertBackend(op.backend);
    case 'deleteVip':
      return dp.deleteVip(op.key);
    case 'upsertVip':
      return dp.upsertVip(op.vip);
    case 'installTable':
      return dp.installTable(op.vipId, op.table.ids());
    case 'deleteBackend':
      return dp.deleteBackend(op.id);
  }
}

/** Applies a plan in order; on failure throws ReconcileError. `onApplied` sees each op that succeeded. */
export async function applyPlan(
  dp: Datapath,
  plan: Plan,
  desired: DesiredState,
  onApplied?: (op: Op) => void,
): Promise<ReconcileSummary> {
  const started = performance.now();
  for (let i = 0; i < plan.length; i++) {
    const op = plan[i]!;
    try {
      await applyOp(dp, op);
    } catch (e) {
      const partial = summarisePlan(plan.slice(0, i), desired);
      partial.durationMs = performance.now() - started;
      throw new ReconcileError(op, partial, e);
    }
    onApplied?.(op);
  }
  const summary = summarisePlan(plan, desired);
  summary.durationMs = performance.now() - started;
  return summary;
}

/** Stateless reconcile: read the datapath, plan, apply. Returns what it did. */
export async function reconcile(dp: Datapath, desired: DesiredState): Promise<ReconcileSummary> {
  const started = performance.now();
  const actual = await readActual(dp);
  const summary = await applyPlan(dp, planReconcile(actual, desired), desired);
  summary.durationMs = performance.now() - started;
  return summary;
}

/** Mutable mirror of ActualState, updated op by op. */
class Mirror {
  config: ActualState['config'];
  vips: Map<string, VipSpec>;
  backends: Map<number, ActualState['backends'][number]>;
  tables: Map<number, Uint32Array | IdTable | null>;

  constructor(a: ActualState) {
    this.config = a.config;
    this.vips = new Map(a.vips.map((v) => [vipKeyText(v.key), v]));
    this.backends = new Map(a.backends.map((b) => [b.id, b]));
    this.tables = new Map(a.tables);
  }

  apply(op: Op): void {
    switch (op.op) {
      case 'configure':
        this.config = op.config;
        break;
      case 'upsertBackend':
        this.backends.set(op.backend.id, op.backend);
        break;
      case 'deleteVip': {
        this.vips.delete(vipKeyText(op.key));
        this.tables.delete(op.id);
        break;
      }
      case 'upsertVip': {
        const old = this.vips.get(vipKeyText(op.vip.key));
        if (old !== undefined && (old.id !== op.vip.id || old.tableSize !== op.vip.tableSize))
          this.tables.delete(old.id);
        this.vips.set(vipKeyText(op.vip.key), op.vip);
        break;
      }
      case 'installTable':
        // Desired tables are immutable, so keeping the reference is safe and makes the next compare O(1).
        this.tables.set(op.vipId, op.table);
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
    for (const v of desired.vips)
      if (this.tables.get(v.spec.id) instanceof Uint32Array) this.tables.set(v.spec.id, v.table);
  }

  snapshot(): ActualState {
    return {
      config: this.config,
      vips: [...this.vips.values()],
      backends: [...this.backends.values()],
      tables: this.tables,
    };
  }
}

/**
 * Long-lived reconciler for the daemon: reads the datapath once, then trusts a mirror of its own writes
 * (so a reload compares in memory, not against kernel maps). Any failure drops the mirror: the next
 * call reads the datapath again. Calls are serialised.
 */
export class Reconciler {
  private mirror: Mirror | null = null;
  /** The desiredState result whose plan was last applied in full onto the mirror (incremental planning). */
  private applied: DesiredState | null = null;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly dp: Datapath) {}

  /** Forget the mirror: the next reconcile reads the datapath (e.g. after someone else wrote to it). */
  resync(): void {
    this.mirror = null;
    this.applied = null;
  }

  /** Plans against the mirror (or a fresh read) and applies; serialised with other calls. */
  reconcile(desired: DesiredState): Promise<ReconcileSummary> {
    const run = this.chain.then(() => this.run(desired));
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** The plan the next reconcile would apply, without applying it. */
  async dryRun(desired: DesiredState): Promise<Plan> {
    await this.chain;
    if (this.mirror !== null) return this.plan(this.mirror, desired);
    return planReconcile(new Mirror(await readActual(this.dp)).snapshot(), desired);
  }

  /** Plans against the mirror: incrementally from the last applied state when both are desiredState results. */
  private plan(mirror: Mirror, desired: DesiredState): Plan {
    if (this.applied !== null && fromDesiredState(this.applied) && fromDesiredState(desired))
      return planSince(
        {
          config: mirror.config,
          vips: mirror.vips.values(),
          backends: mirror.backends,
          tables: mirror.tables,
        },
        desired,
        this.applied,
      );
    return planReconcile(mirror.snapshot(), desired);
  }

  private async run(desired: DesiredState): Promise<ReconcileSummary> {
    const started = performance.now();
    try {
      if (this.mirror === null) {
        this.applied = null;
        this.mirror = new Mirror(await readActual(this.dp));
      }
      const mirror = this.mirror;
      const plan = this.plan(mirror, desired);
      this.applied = null;
      const summary = await applyPlan(this.dp, plan, desired, (op) => mirror.apply(op));
      mirror.settleTables(desired);
      this.applied = fromDesiredState(desired) ? desired : null;
      summary.durationMs = performance.now() - started;
      return summary;
    } catch (e) {
      this.mirror = null;
      this.applied = null;
      throw e;
    }
  }
}
