// Health targets from desired state: one per backend membership of every VIP that has a healthCheck (the
// monitor probes each distinct target once, however many VIPs share it).
// Not yet: in Kubernetes node mode (externalTrafficPolicy: Local) the target should be the Service's
// healthCheckNodePort that kube-proxy serves on each node, not every endpoint (issue 17, a later change).
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
  const out: HealthTarget[] = [];
  for (const vip of desired.vips) {
    if (vip.healthCheck === null) continue;
    for (const b of vip.backends) {
      const init = initial?.get(b.key);
      out.push({
        key: b.key,
        vip: vip.name,
        address: b.address,
        check: vip.healthCheck,
        ...(init === undefined ? {} : { initial: init }),
      });
    }
  }
  return out;
}

/**
 * Whether healthTargets gives the same targets for two desired states' VIPs (`initial` aside: it only seeds
 * memberships new to the monitor). O(memberships), no allocation: a sync whose targets did not change (a health
 * flip, the start's second sync, a change of other settings) skips HealthMonitor.setTargets, which rebuilds every
 * membership's state (110-150 ms and ~37 MB of garbage at 512 x 100).
 */
export function sameTargets(a: readonly DesiredVip[], b: readonly DesiredVip[]): boolean {
  let i = 0;
  let j = 0;
  for (;;) {
    while (i < a.length && a[i]!.healthCheck === null) i++;
    while (j < b.length && b[j]!.healthCheck === null) j++;
    if (i === a.length || j === b.length) return i === a.length && j === b.length;
    const x = a[i++]!;
    const y = b[j++]!;
    if (x === y) continue;
    if (x.name !== y.name || x.backends.length !== y.backends.length) return false;
    if (x.healthCheck !== y.healthCheck && !sameCheck(x.healthCheck!, y.healthCheck!)) return false;
    for (let k = 0; k < x.backends.length; k++) {
      const u = x.backends[k]!;
      const w = y.backends[k]!;
      if (u.key !== w.key || u.address !== w.address) return false;
    }
  }
}
