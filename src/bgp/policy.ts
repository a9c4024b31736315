// Pure announce policy: which VIP prefixes this node announces, from readiness facts the daemon gathers.
import { canonicalPrefix } from './ip';

/** What the daemon knows about one VIP at this moment. */
export interface VipReadiness {
  /** VIP address or prefix ('10.0.0.10' means /32, '2001:db8::10' means /128). */
  vip: string;
  /** The XDP program is attached on this node. */
  attached: boolean;
  /** The VIP is written into the datapath maps. */
  programmed: boolean;
  healthyBackends: number;
  /** Per-VIP override of the node-wide minimum. */
  minHealthyBackends?: number;
  communities?: string[];
  largeCommunities?: string[];
}

/** One route handed to BgpSpeaker.setRoutes. */
export interface RouteSpec {
  prefix: string;
  /** Next hop override (default: per peer, next-hop self). */
  nextHop?: string;
  communities?: string[];
  largeCommunities?: string[];
  med?: number;
  localPref?: number;
}

export type WithheldReason = 'not-attached' | 'not-programmed' | 'too-few-healthy-backends';

export interface AnnounceDecision {
  /** Routes to announce, sorted by prefix, communities sorted and unique. */
  announce: RouteSpec[];
  /** VIPs not announced and why. */
  withheld: { vip: string; reason: WithheldReason }[];
}

const uniqSorted = (xs: string[] | undefined): string[] => [...new Set(xs ?? [])].sort();

/**
 * A VIP is announced only while this node can forward it: program attached, VIP programmed, at least
 * minHealthyBackends (default 1) healthy. Same input -> same output, so unchanged facts send nothing.
 */
export function decideAnnouncements(o: {
  vips: VipReadiness[];
  minHealthyBackends?: number;
}): AnnounceDecision {
  const min = o.minHealthyBackends ?? 1;
  if (!Number.isInteger(min) || min < 1)
    throw new TypeError(`minHealthyBackends must be an integer >= 1, got ${min}`);
  const byPrefix = new Map<string, RouteSpec>();
  const withheld: AnnounceDecision['withheld'] = [];
  for (const v of o.vips) {
    const prefix = canonicalPrefix(v.vip);
    const need = v.minHealthyBackends ?? min;
    if (!Number.isInteger(need) || need < 1)
      throw new TypeError(`minHealthyBackends of VIP ${v.vip} must be an integer >= 1, got ${need}`);
    let reason: WithheldReason | null = null;
    if (!v.attached) reason = 'not-attached';
    else if (!v.programmed) reason = 'not-programmed';
    else if (v.healthyBackends < need) reason = 'too-few-healthy-backends';
    if (reason) {
      withheld.push({ vip: v.vip, reason });
      continue;
    }
    // Several services on one VIP (different ports) share one route: merge their communities.
    const prev = byPrefix.get(prefix);
    byPrefix.set(prefix, {
      prefix,
      communities: uniqSorted([...(prev?.communities ?? []), ...(v.communities ?? [])]),
      largeCommunities: uniqSorted([...(prev?.largeCommunities ?? []), ...(v.largeCommunities ?? [])]),
    });
  }
  const announce = [...byPrefix.values()].sort((a, b) =>
    a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0,
  );
  return { announce, withheld };
}
