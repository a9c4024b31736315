// Previous tables in reconcile: per VIP what is retained (previous.ts), which previous-table writes go with a
// plan, and what a restarted daemon does with the ones it finds pinned.
//
// Restart: the datapath's previous tables are pinned with its maps and survive the daemon. A reconciler that
// meets a VIP for the first time reads its previous table and keeps the slots where it differs from the
// installed table as if they had changed at that moment (their real age is not stored): hinted as before for
// retainSeconds after the start, merged with the changes that follow, never wiped by adoption itself.
import type { Datapath, VipSpec } from '../datapath/types';
import type { DesiredState, DesiredVip } from './desired';
import { vipKeyText } from './ids';
import type { Op, Plan, PreviousReason } from './plan';
import { adoptPinned, expire, nextExpiry, previousTable, recordChange, Retained } from './previous';
import type { IdTable } from './table';

/** What reconcile knows of one VIP's previous table. */
interface VipPrevious {
  /** The VIP id the datapath holds it under (a re-keyed id starts with none: the datapath clears it). */
  vipId: number;
  retained: Retained | null;
  /** Names `retained` in fingerprints: a new token whenever it changes. */
  token: string;
  /** What the datapath holds: NONE, UNKNOWN, or the inputs (fingerprint) of the table written. */
  installed: string;
}

const NONE = 'none';
const UNKNOWN = 'unknown';

/** A VIP's previous-owner state, for metrics. */
export interface PreviousOwnerView {
  /** VIP key text ("10.0.0.10:80/tcp"). */
  key: string;
  vipId: number;
  /** Slots with a retained previous owner (natural owners of redirected slots not counted). */
  retainedSlots: number;
  /** When the newest retained change happened (ms, the reconciler's clock); null: none. */
  newestChangeAt: number | null;
  /** When the oldest retained slot expires (ms); null: none. */
  expiresAt: number | null;
  /** Whether the datapath holds a previous table computed for this VIP (false: none, or not known yet). */
  installed: boolean;
}

/** Inputs of one planning pass. */
export interface PreviousPlanInput {
  plan: Plan;
  /** The datapath's VIPs as the plan found them (by key text) and their installed tables. */
  actualVips: ReadonlyMap<string, VipSpec>;
  tables: ReadonlyMap<number, Uint32Array | IdTable | null>;
  desired: DesiredState;
  now: number;
}

/** What a planning pass leaves to commit for one VIP as its writes succeed. */
interface PendingVip {
  key: string;
  vipId: number;
  /** What is retained once the plan applied; computed when first asked (a table change costs table builds,
   * done in the sliced apply, not while planning). */
  retained: () => Retained | null;
  token: string;
  /** Whether the plan installs a new current table for the VIP (its state then waits for that write). */
  tableChange: boolean;
  /** The fingerprint the datapath holds once the previous-table write succeeds; null: no write planned. */
  target: string | null;
}

/** The value of `f()`, computed once. */
function once<T>(f: () => T): () => T {
  let done = false;
  let v: T;
  return () => {
    if (!done) {
      v = f();
      done = true;
    }
    return v;
  };
}

/**
 * The previous-owner state of every VIP a reconciler programs: adds the previous-table writes to its plans
 * (before the VIP's new table, in the same batch; or on their own for expiry and settings) and commits what
 * is retained as the writes succeed.
 */
export class PreviousOwners {
  readonly #byKey = new Map<string, VipPrevious>();
  #pending: Map<string, PendingVip> | null = null;
  #retainMs = 0;
  #seq = 0;
  /** Fingerprints by desired VIP object and token: a VIP unchanged since the last sync costs no string. */
  readonly #fingerprints = new WeakMap<DesiredVip, { token: string; fp: string }>();

  /** VIPs of `vips` this state has never seen: their pinned previous tables are to be read (adopt). */
  unknown(vips: Iterable<VipSpec>): VipSpec[] {
    return [...vips].filter((v) => !this.#byKey.has(vipKeyText(v.key)));
  }

  /** Takes over what the datapath holds for a VIP met for the first time (see the top of this file). */
  adopt(
    vip: VipSpec,
    pinned: Uint32Array | null,
    installed: Uint32Array | IdTable | null,
    now: number,
  ): void {
    const retained = pinned === null ? null : adoptPinned(pinned, installed, now);
    this.#byKey.set(vipKeyText(vip.key), {
      vipId: vip.id,
      retained,
      token: retained === null ? NONE : this.token(),
      // Whatever is pinned is rewritten once from what was adopted (the same hints, now with known inputs).
      installed: pinned === null ? NONE : UNKNOWN,
    });
  }

  /** Reads and adopts the previous tables of the VIPs in `vips` this state has not seen. */
  async adoptFrom(
    dp: Datapath,
    vips: Iterable<VipSpec>,
    tables: ReadonlyMap<number, Uint32Array | IdTable | null>,
    now: number,
  ): Promise<void> {
    for (const v of this.unknown(vips)) {
      let pinned: Uint32Array | null;
      try {
        pinned = await dp.readPreviousTable(v.id);
      } catch {
        // Taken as none: writing "clear" blindly would fail the same way on every sync. A stale table stays
        // until the VIP's table next changes (its previous table is written then).
        pinned = null;
      }
      this.adopt(v, pinned, tables.get(v.id) ?? null, now);
    }
  }

  private token(): string {
    return `r${++this.#seq}`;
  }

  /**
   * The plan with previous-table writes added: attached to each changed VIP's installTable (the previous
   * table goes first, in the same batch), and on their own at the end for VIPs whose table stays but whose
   * previous table must change (a slot expired, hints turned on or off, a write to retry). Remembers what
   * to commit; call commit() for each op applied and settle() after the plan. `turn` is awaited before each VIP
   * (a caller's slicer: at 512 x 1000 the pass is ~35 ms).
   */
  async plan(input: PreviousPlanInput, turn?: () => Promise<void>): Promise<Plan> {
    const { desired, now } = input;
    const settings = desired.secondChance;
    const retainMs = settings.retainSeconds * 1000;
    this.#retainMs = retainMs;
    const pending = new Map<string, PendingVip>();
    const extra: Plan = [];
    // installTable ops are copied before one gets its previous table: a plan is a value its caller may keep.
    const out: Plan = input.plan.map((op) => (op.op === 'installTable' ? { ...op } : op));
    const tableOps = new Map<string, Extract<Op, { op: 'installTable' }>>();
    for (const op of out) if (op.op === 'installTable') tableOps.set(op.vipName, op);
    for (const d of desired.vips) {
      await turn?.();
      const key = vipKeyText(d.spec.key);
      const had = input.actualVips.get(key);
      const st: VipPrevious = this.#byKey.get(key) ?? {
        vipId: d.spec.id,
        retained: null,
        token: NONE,
        installed: had === undefined ? NONE : UNKNOWN,
      };
      const tableOp = tableOps.get(d.name);
      const old = had === undefined ? null : (input.tables.get(had.id) ?? null);
      // The datapath hints only between GUE backends: a VIP without one needs no previous table (nor state).
      const want = settings.enabled && hasGue(d);
      let retained: () => Retained | null;
      let token: string;
      if (!want) [retained, token] = [() => null, NONE];
      else if (tableOp !== undefined && old !== null) {
        retained = once(() =>
          recordChange({ retained: st.retained, old, current: d.table, now, retainMs, keep: keeper(d) }),
        );
        token = this.token();
      } else {
        const r = expire(st.retained, now, retainMs);
        retained = () => r;
        token = r === st.retained ? st.token : r === null ? NONE : this.token();
      }
      const hints = want && (token !== NONE || d.table.redirects);
      const fp = hints ? this.fingerprint(d, token) : NONE;
      // A re-keyed VIP id starts with an empty previous slot (the datapath clears it).
      const installed = st.vipId === d.spec.id ? st.installed : NONE;
      const write = fp !== installed;
      pending.set(d.name, {
        key,
        vipId: d.spec.id,
        retained,
        token,
        tableChange: tableOp !== undefined,
        target: write ? fp : null,
      });
      if (!write) continue;
      const reason: PreviousReason =
        tableOp !== undefined
          ? 'change'
          : installed === UNKNOWN
            ? 'retry'
            : token !== st.token && settings.enabled
              ? 'expiry'
              : 'settings';
      const build = hints
        ? (): Uint32Array | null =>
            previousTable({ current: d.table, retained: retained(), now, retainMs, keep: keeper(d) })
        : null;
      if (tableOp !== undefined) tableOp.previous = { build, reason };
      else extra.push({ op: 'installPreviousTable', vipId: d.spec.id, vipName: d.name, build, reason });
    }
    this.#pending = pending;
    return extra.length === 0 ? out : [...out, ...extra];
  }

  /**
   * Records one applied op of the last plan: an installTable commits what the VIP retains (the change
   * happened); a previous table written (attached to an installTable, or on its own) commits what the
   * datapath now holds, or unknown when that write failed (`previousOk` false: it is retried next time).
   */
  commit(op: Op, previousOk = true): void {
    if (op.op === 'deleteVip') {
      this.#byKey.delete(vipKeyText(op.key));
      return;
    }
    if (this.#pending === null || (op.op !== 'installTable' && op.op !== 'installPreviousTable')) return;
    const e = this.#pending.get(op.vipName);
    if (e === undefined) return;
    const was = this.#byKey.get(e.key);
    const wrote = op.op === 'installPreviousTable' || op.previous !== undefined;
    const installed =
      wrote && e.target !== null ? (previousOk ? e.target : UNKNOWN) : (was?.installed ?? NONE);
    const state =
      op.op === 'installTable'
        ? { retained: e.retained(), token: e.token }
        : { retained: was?.retained ?? null, token: was?.token ?? NONE };
    this.#byKey.set(e.key, { vipId: e.vipId, ...state, installed });
    if (op.op === 'installTable') e.tableChange = false;
  }

  /** A previous-table write failed (on its own, or attached to a table install that failed too): unknown. */
  previousFailed(op: Op): void {
    if (op.op !== 'installTable' && op.op !== 'installPreviousTable') return;
    const e = this.#pending?.get(op.vipName);
    if (e === undefined) return;
    const was = this.#byKey.get(e.key);
    this.#byKey.set(e.key, {
      vipId: was?.vipId ?? e.vipId,
      retained: was?.retained ?? null,
      token: was?.token ?? NONE,
      installed: UNKNOWN,
    });
  }

  /**
   * After a plan was applied: a VIP whose table did not change takes its expired state, unless it failed;
   * VIPs no longer desired are forgotten (deleting a VIP clears its previous table in the datapath).
   */
  settle(failedVips: ReadonlySet<string>): void {
    const pending = this.#pending;
    if (pending === null) return;
    const keys = new Set<string>();
    for (const [name, e] of pending) {
      keys.add(e.key);
      if (e.tableChange || failedVips.has(name)) continue;
      const was = this.#byKey.get(e.key);
      this.#byKey.set(e.key, {
        vipId: e.vipId,
        retained: e.retained(),
        token: e.token,
        installed: was?.vipId === e.vipId ? was.installed : NONE,
      });
    }
    for (const key of [...this.#byKey.keys()]) if (!keys.has(key)) this.#byKey.delete(key);
    this.#pending = null;
  }

  private fingerprint(d: DesiredVip, token: string): string {
    const hit = this.#fingerprints.get(d);
    if (hit !== undefined && hit.token === token) return hit.fp;
    // The inputs a previous table is computed from: equal fingerprints, equal tables.
    const fp = `${d.spec.id}|${d.table.signature}|${d.backends.map((b) => b.id).join(',')}|${token}`;
    this.#fingerprints.set(d, { token, fp });
    return fp;
  }

  /** The earliest moment (ms) a retained slot expires: reconcile again then. null: none retained. */
  nextExpiry(): number | null {
    let min: number | null = null;
    for (const st of this.#byKey.values()) {
      const t = nextExpiry(st.retained, this.#retainMs);
      if (t !== null && (min === null || t < min)) min = t;
    }
    return min;
  }

  /** Per VIP: what is retained (for metrics). */
  view(): PreviousOwnerView[] {
    const out: PreviousOwnerView[] = [];
    for (const [key, st] of this.#byKey) {
      const r = st.retained;
      out.push({
        key,
        vipId: st.vipId,
        retainedSlots: r?.count ?? 0,
        newestChangeAt: r?.newest ?? null,
        expiresAt: nextExpiry(r, this.#retainMs),
        installed: st.installed !== NONE && st.installed !== UNKNOWN,
      });
    }
    return out;
  }
}

/** Whether a desired VIP has a GUE backend; memoised (desired VIPs are values, reused while unchanged). */
const gueOf = new WeakMap<DesiredVip, boolean>();
function hasGue(d: DesiredVip): boolean {
  let g = gueOf.get(d);
  if (g === undefined) {
    g = d.backends.some((b) => b.encap === 'gue');
    gueOf.set(d, g);
  }
  return g;
}

/** The ids a VIP's previous table may name: its backends now. */
function keeper(d: DesiredVip): (id: number) => boolean {
  const ids = new Set(d.backends.map((b) => b.id));
  return (id) => ids.has(id);
}
