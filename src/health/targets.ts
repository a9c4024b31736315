// Health targets from desired state: one per backend membership of every VIP that has a healthCheck (the
// monitor probes each distinct target once, however many VIPs share it).
// Not yet: in Kubernetes node mode (externalTrafficPolicy: Local) the target should be the Service's
// healthCheckNodePort that kube-proxy serves on each node, not every endpoint (issue 17, a later change).
import type { DesiredState } from '../reconcile/desired';
import type { HealthTarget } from './monitor';
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
