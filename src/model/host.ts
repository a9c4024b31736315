// Checks of a validated config against the host it runs on (the daemon's facts, at start and on reload).
import { formatPath, showValue, type ConfigIssue } from './errors';
import { canonicalIp } from './ip';
import type { Config } from './types';

/** Facts about this host that some checks need: only the daemon knows them (at start and on reload). */
export interface HostFacts {
  /** config.interface. */
  interface: string;
  /** The interface's addresses. */
  addresses: readonly string[];
}

/**
 * Checks of a validated config against the host, in validateConfig's style (path, value, why): a VIP that is
 * an address of the balancer's interface (the balancer would take the node's own traffic: BGP, health-check
 * replies) or a backend that is (the balancer would send the VIP's traffic to itself).
 */
export function hostIssues(config: Config, host: HostFacts): ConfigIssue[] {
  const own = new Set(host.addresses.map(canonicalIp).filter((a): a is string => a !== null));
  const issues: ConfigIssue[] = [];
  if (own.size === 0) return issues;
  const mine = `an address of this node's interface ${host.interface}`;
  config.vips.forEach((v, i) => {
    if (own.has(v.address))
      issues.push({
        path: formatPath(['vips', i, 'address']),
        message: `${showValue(v.address)} is ${mine} (the balancer would take the node's own traffic)`,
      });
    v.backends.forEach((b, j) => {
      if (own.has(b.address))
        issues.push({
          path: formatPath(['vips', i, 'backends', j, 'address']),
          message: `${showValue(b.address)} is ${mine} (the balancer would send the VIP's traffic to itself)`,
        });
    });
  });
  return issues;
}
