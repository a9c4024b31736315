// Health targets from desired state: one per backend membership of every VIP that has a healthCheck (the
// monitor probes each distinct target once, however many VIPs share it), and what changed between two states.
// In Kubernetes node mode the backends are nodes and the check is what kube-proxy serves there (nodeHealthCheck:
// a Service's healthCheckNodePort for externalTrafficPolicy Local), so every Service on a node shares its probe.
import type { DesiredState, DesiredVip } from '../reconcile/desired';
import { sameCheck, type HealthTarget } from './monitor';
import type { HealthStatus } from './state';

/**
 * Targets for HealthMonitor.setTargets. `initial` (optional) seeds statuses, e.g. from the backend
 * states an adopted datapath holds, so a restart keeps a down backend down until it rises.
 */
export function healthTargets(
  desired: DesiredState,
  initial?: ReadonlyMap<string, HealthStatus>,
): HealthTarget[] {
  // one piece of them all
  const [all] = targetPieces(desired.vips, initial, Math.max(1, targetCount(desired.vips)));
  return all ?? [];
}

/** The target of one membership `b` of `vip` (it has a healthCheck). */
function vipTarget(
  vip: DesiredVip,
  b: DesiredVip['backends'][number],
  initial: ReadonlyMap<string, HealthStatus> | undefined,
): HealthTarget {
  const init = initial?.get(b.key);
  // Two literals, no spread: a spread made each of the start's targets (512,000 at 512 x 1000) an object and a copy.
  if (init === undefined) return { key: b.key, vip: vip.name, address: b.address, check: vip.healthCheck! };
  return { key: b.key, vip: vip.name, address: b.address, check: vip.healthCheck!, initial: init };
}

/** How many targets healthTargets gives `vips`: the memberships of those with a healthCheck. */
export function targetCount(vips: readonly DesiredVip[]): number {
  let n = 0;
  for (const v of vips) if (v.healthCheck !== null) n += v.backends.length;
  return n;
}

/**
 * healthTargets(desired, initial) in pieces of at most `size`, in its order (a VIP's may span two pieces): a caller
 * that sets them a piece at a time holds one piece, not all (the start's 512,000 at 512 x 1000 were ~74 MB at once).
 */
export function* targetPieces(
  vips: readonly DesiredVip[],
  initial: ReadonlyMap<string, HealthStatus> | undefined,
  size: number,
): Generator<HealthTarget[], void, undefined> {
  if (!(Number.isInteger(size) && size > 0)) throw new RangeError(`size: ${size} is not a positive integer`);
  let piece: HealthTarget[] = [];
  for (const vip of vips) {
    if (vip.healthCheck === null) continue;
    for (const b of vip.backends) {
      piece.push(vipTarget(vip, b, initial));
      if (piece.length === size) {
        yield piece;
        piece = [];
      }
    }
  }
  if (piece.length > 0) yield piece;
}

/** What HealthMonitor.updateTargets takes to go from one desired state's targets to another's. */
export interface TargetsChange {
  /** Membership keys no longer checked (none of them in `upsert`). */
  remove: string[];
  /** The targets that are new or changed (address, or the VIP's check: then all of that VIP's); a VIP's
   * unchanged targets are left out (updateTargets would keep their state anyway: ~2-5 ms, up to 130 ms cold, per
   * 1,000-member VIP for nothing). */
  upsert: HealthTarget[];
  /** The health desired state gave each of `upsert` (by index): a new target whose status differs needs a sync. */
  health: (HealthStatus | 'unknown')[];
  /** Those VIPs. */
  vips: DesiredVip[];
}

/**
 * The targets that changed from VIPs `a` to VIPs `b`, by VIP name: O(VIPs) plus the backends of the VIPs that
 * changed, no allocation for one that did not (desiredState keeps an unchanged VIP's object, and a health flip
 * changes a VIP's object but not its targets). `initial` as healthTargets takes it.
 */
export function targetsChange(
  a: readonly DesiredVip[],
  b: readonly DesiredVip[],
  initial?: ReadonlyMap<string, HealthStatus>,
): TargetsChange {
  const steps = targetsChangeSteps(a, b, initial);
  for (let s = steps.next(); ; s = steps.next()) if (s.done === true) return s.value;
}

/**
 * targetsChange as steps: each yield is after a VIP of `b` whose memberships were looked at, giving their count
 * (a caller gives the event loop a turn every so many: at 512 x 1000 with every VIP changed the whole change was
 * ~35 ms in one piece); the return value is targetsChange's.
 */
export function* targetsChangeSteps(
  a: readonly DesiredVip[],
  b: readonly DesiredVip[],
  initial?: ReadonlyMap<string, HealthStatus>,
): Generator<number, TargetsChange, void> {
  const out: TargetsChange = { remove: [], upsert: [], health: [], vips: [] };
  const before = new Map<string, DesiredVip>();
  for (const v of a) if (v.healthCheck !== null) before.set(v.name, v);
  for (const v of b) {
    if (v.healthCheck === null) continue;
    const was = before.get(v.name);
    before.delete(v.name);
    if (was === v) continue;
    yield v.backends.length;
    if (was !== undefined && sameVipTargets(was, v)) continue;
    out.vips.push(v);
    if (
      was === undefined ||
      !(was.healthCheck === v.healthCheck || sameCheck(was.healthCheck!, v.healthCheck!))
    ) {
      for (const b of v.backends) upsert(out, v, b, initial);
      if (was === undefined) continue;
      const kept = new Set(v.backends.map((x) => x.key));
      for (const x of was.backends) if (!kept.has(x.key)) out.remove.push(x.key);
      continue;
    }
    // The same check: only the memberships that are new or moved to another address.
    sameCheckChange(was, v, initial, out);
  }
  for (const was of before.values()) for (const x of was.backends) out.remove.push(x.key);
  // A key both removed and upserted (a VIP renamed over the same address) only moves: not removed (the change
  // may be set in pieces, and a removal after its upsert would drop it).
  if (out.remove.length > 0 && out.upsert.length > 0) {
    const upserted = new Set(out.upsert.map((t) => t.key));
    out.remove = out.remove.filter((k) => !upserted.has(k));
  }
  return out;
}

/**
 * The targets of VIP `v` that are new or moved against `was` (the same VIP, the same check) into `out.upsert`, the
 * keys that went into `out.remove`. The common prefix and suffix (in the same order: a backend added or removed
 * leaves the rest in place) are compared in place; only the middle goes through a Map (a Map of every membership
 * of every changed VIP was ~150 ms when every VIP at 512 x 1000 changed, in one synchronous call).
 */
function sameCheckChange(
  was: DesiredVip,
  v: DesiredVip,
  initial: ReadonlyMap<string, HealthStatus> | undefined,
  out: TargetsChange,
): void {
  const a = was.backends;
  const b = v.backends;
  let i = 0;
  while (i < a.length && i < b.length && a[i]!.key === b[i]!.key) {
    if (a[i]!.address !== b[i]!.address) upsert(out, v, b[i]!, initial);
    i++;
  }
  let ea = a.length;
  let eb = b.length;
  while (ea > i && eb > i && a[ea - 1]!.key === b[eb - 1]!.key) {
    ea--;
    eb--;
    if (a[ea]!.address !== b[eb]!.address) upsert(out, v, b[eb]!, initial);
  }
  if (ea === i) {
    for (let k = i; k < eb; k++) upsert(out, v, b[k]!, initial);
    return;
  }
  const had = new Map<string, string>();
  for (let k = i; k < ea; k++) had.set(a[k]!.key, a[k]!.address);
  for (let k = i; k < eb; k++) {
    const x = b[k]!;
    if (had.get(x.key) !== x.address) upsert(out, v, x, initial);
    had.delete(x.key);
  }
  for (const key of had.keys()) out.remove.push(key);
}

/** Membership `b` of `vip` into `out.upsert`, its desired health into `out.health`. */
function upsert(
  out: TargetsChange,
  vip: DesiredVip,
  b: DesiredVip['backends'][number],
  initial: ReadonlyMap<string, HealthStatus> | undefined,
): void {
  out.upsert.push(vipTarget(vip, b, initial));
  out.health.push(b.health);
}

/** Whether healthTargets gives two desired VIPs (each with a healthCheck) the same targets (`initial` aside). */
function sameVipTargets(x: DesiredVip, y: DesiredVip): boolean {
  if (x.name !== y.name || x.backends.length !== y.backends.length) return false;
  if (x.healthCheck !== y.healthCheck && !sameCheck(x.healthCheck!, y.healthCheck!)) return false;
  for (let k = 0; k < x.backends.length; k++) {
    const u = x.backends[k]!;
    const w = y.backends[k]!;
    if (u.key !== w.key || u.address !== w.address) return false;
  }
  return true;
}
