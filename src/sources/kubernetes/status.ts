// Pure leader work: pool allocation for our Services and the status.loadBalancer.ingress each should carry.
import { canonicalIp } from '../../model/ip';
import { isOurService, LoadBalancerIngress, objectKey, Service } from './objects';
import { allocate, AllocationRequest, Pool } from './pool';
import { preferredFamily, Problem, serviceAddresses } from './translate';

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

/** Status writes the leader must make: allocates pool addresses, keeps existing ones, touches only changes. */
export function planStatus(opts: {
  loadBalancerClass: string;
  pool: Pool | null;
  services: readonly Service[];
}): {
  updates: StatusUpdate[];
  problems: Problem[];
} {
  const ours = opts.services
    .filter((s) => isOurService(s, opts.loadBalancerClass))
    .sort((a, b) => (objectKey(a.metadata) < objectKey(b.metadata) ? -1 : 1));
  const wanted = new Map<string, string[]>();
  const requests: AllocationRequest[] = [];
  const reserved = new Set<string>();
  for (const svc of ours) {
    const a = serviceAddresses(svc, opts.pool);
    if (!a.ok) continue; // translate() reports it
    const key = objectKey(svc.metadata);
    if (a.value.source === 'pool') {
      const current =
        a.value.addresses.find((x) => (x.includes(':') ? 6 : 4) === preferredFamily(svc)) ?? null;
      requests.push({ key, family: preferredFamily(svc), current });
    } else {
      wanted.set(key, a.value.addresses);
      for (const x of a.value.addresses) reserved.add(x);
    }
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
