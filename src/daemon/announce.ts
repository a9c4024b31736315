// The routes the daemon hands BGP: readiness facts per desired VIP (attached, programmed, healthy) -> policy.
import { AnnounceDecision, decideAnnouncements, VipReadiness } from '../bgp/policy';
import type { VipConfig } from '../model/config';
import type { DesiredState } from '../reconcile/desired';

export interface AnnounceFacts {
  /** The last desired state applied (null: nothing reconciled yet, nothing is announced). */
  desired: DesiredState | null;
  /** Every VIP's config (file and Kubernetes), for communities and per-VIP minimums; names are unique. */
  vipConfigs: Iterable<VipConfig>;
  /** The balancer is attached to the interface. */
  attached: boolean;
  /** The last reconcile failed as a whole (e.g. the datapath could not be read): no VIP counts as programmed. */
  reconcileFailed: boolean;
  /** Names of VIPs whose datapath writes failed: only these are withdrawn. */
  failedVips: ReadonlySet<string>;
  /** Node-wide minimum of healthy backends (bgp.minHealthyBackends). */
  minHealthyBackends?: number;
}

/** Decides the announced routes from the daemon's facts; pure. */
export function announcements(f: AnnounceFacts): AnnounceDecision {
  const byName = new Map<string, VipConfig>();
  for (const v of f.vipConfigs) byName.set(v.name, v);
  const vips: VipReadiness[] = (f.desired?.vips ?? []).map((v) => {
    const cfg = byName.get(v.name);
    return {
      vip: v.spec.key.address,
      attached: f.attached,
      programmed: !f.reconcileFailed && !f.failedVips.has(v.name),
      // Backends taking new flows: a VIP failing open counts all of them, so it stays announced. Withdrawing
      // when every check fails would, when every LB node's checks fail at once (a flood starving checkers,
      // a broken health endpoint), withdraw the service everywhere; failOpen: false withdraws instead.
      healthyBackends: v.usableBackends,
      minHealthyBackends: cfg?.minHealthyBackends ?? undefined,
      communities: cfg?.communities,
      largeCommunities: cfg?.largeCommunities,
    };
  });
  return decideAnnouncements({ vips, minHealthyBackends: f.minHealthyBackends });
}
