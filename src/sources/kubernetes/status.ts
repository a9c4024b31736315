// Pure leader work: pool allocation for our Services and the status.loadBalancer.ingress each should carry.
import { canonicalIp } from '../../model/ip';
import { isOurService, LoadBalancerIngress, objectKey, Service } from './objects';
import { allocate, AllocationRequest, Pool } from './pool';
import { ClaimMemo, grantAddresses, preferredFamily, Problem } from './translate';

export interface StatusUpdate {
  namespace: string;
  name: string;
  ingress: LoadBalancerIngress[];
}

const sameIngress = (a: readonly LoadBalancerIngress[], b: readonly LoadBalancerIngress[]): boolean =>
  a.length === b.length &&
  a.every(
    (x, i) => (canonicalIp(x.ip ?? '') ?? x.ip) === b[i]!.ip && (x.ipMode ?? null) === (b[i]!.ipMode ?? null),
  );

/**
 * Status writes the leader must make: allocates pool addresses, keeps existing ones, touches only changes.
 * A Service whose requested address is refused (not allowed, or held by another) gets an empty ingress: its
 * status must not show what no node announces. Pool allocation never hands out an address anyone claims.
 */
export function planStatus(opts: {
  loadBalancerClass: string;
  pool: Pool | null;
  /** kubernetes.allowedAddresses (requests only; never allocated from). */
  allowed?: Pool | null;
  services: readonly Service[];
  /** grantAddresses' per-Service memo for this pool and allowed list (Service objects are never mutated). */
  memo?: ClaimMemo;
}): {
  updates: StatusUpdate[];
  problems: Problem[];
} {
  const ours = opts.services
    .filter((s) => isOurService(s, opts.loadBalancerClass))
    .sort((a, b) => (objectKey(a.metadata) < objectKey(b.metadata) ? -1 : 1));
  const wanted = new Map<string, string[]>();
  const requests: AllocationRequest[] = [];
  const { grants, claimed } = grantAddresses({
    services: ours,
    pool: opts.pool,
    allowed: opts.allowed,
    memo: opts.memo,
  });
  // Everything claimed is reserved except what a pool Service keeps (its own current address).
  const reserved = new Set(claimed);
  for (const svc of ours) {
    const key = objectKey(svc.metadata);
    const g = grants.get(key)!;
    // translate() reports every refusal (every node does, the leader posts the Event).
    if (!g.ok) {
      if (g.refused) wanted.set(key, []);
      continue;
    }
    if (g.source === 'pool') {
      const current = g.addresses.find((x) => (x.includes(':') ? 6 : 4) === preferredFamily(svc)) ?? null;
      if (current !== null) reserved.delete(current);
      requests.push({ key, family: preferredFamily(svc), current });
    } else wanted.set(key, g.addresses);
  }
  const problems: Problem[] = [];
  if (opts.pool !== null && requests.length > 0) {
    const got = allocate({ pool: opts.pool, requests, reserved });
    for (const svc of ours) {
      const key = objectKey(svc.metadata);
      const r = got.get(key);
      if (r === undefined) continue;
      if (r.ok) wanted.set(key, [r.address]);
      else
        problems.push({
          namespace: svc.metadata.namespace ?? '',
          name: svc.metadata.name ?? '',
          uid: svc.metadata.uid ?? '',
          reason: 'AllocationFailed',
          message: `no address for the Service: ${r.reason}`,
          blocking: true,
        });
    }
  }
  const updates: StatusUpdate[] = [];
  for (const svc of ours) {
    const addrs = wanted.get(objectKey(svc.metadata));
    if (addrs === undefined) continue;
    const ingress: LoadBalancerIngress[] = addrs.map((ip) => ({ ip, ipMode: 'VIP' }));
    if (!sameIngress(svc.status?.loadBalancer?.ingress ?? [], ingress))
      updates.push({ namespace: svc.metadata.namespace ?? '', name: svc.metadata.name ?? '', ingress });
  }
  return { updates, problems };
}
