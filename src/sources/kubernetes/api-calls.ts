// Every Kubernetes API call the source makes: the client goes through these names and RBAC is derived from them.

export interface ApiCallSpec {
  /** API group ('' = core). */
  group: string;
  resource: string;
  verb: 'get' | 'list' | 'watch' | 'create' | 'update' | 'patch';
  /** cluster: any namespace (ClusterRole); namespace: the leader-election namespace only (Role). */
  scope: 'cluster' | 'namespace';
}

export const API_CALLS = {
  listServices: { group: '', resource: 'services', verb: 'list', scope: 'cluster' },
  watchServices: { group: '', resource: 'services', verb: 'watch', scope: 'cluster' },
  patchServiceStatus: { group: '', resource: 'services/status', verb: 'patch', scope: 'cluster' },
  listEndpointSlices: {
    group: 'discovery.k8s.io',
    resource: 'endpointslices',
    verb: 'list',
    scope: 'cluster',
  },
  watchEndpointSlices: {
    group: 'discovery.k8s.io',
    resource: 'endpointslices',
    verb: 'watch',
    scope: 'cluster',
  },
  // Node mode: backend addresses and readiness (list/watch); a node's own labels for per-node settings (get).
  listNodes: { group: '', resource: 'nodes', verb: 'list', scope: 'cluster' },
  watchNodes: { group: '', resource: 'nodes', verb: 'watch', scope: 'cluster' },
  getNode: { group: '', resource: 'nodes', verb: 'get', scope: 'cluster' },
  createEvent: { group: '', resource: 'events', verb: 'create', scope: 'cluster' },
  getLease: { group: 'coordination.k8s.io', resource: 'leases', verb: 'get', scope: 'namespace' },
  createLease: { group: 'coordination.k8s.io', resource: 'leases', verb: 'create', scope: 'namespace' },
  updateLease: { group: 'coordination.k8s.io', resource: 'leases', verb: 'update', scope: 'namespace' },
} as const satisfies Record<string, ApiCallSpec>;

export type ApiCall = keyof typeof API_CALLS;

export interface RbacRule {
  scope: ApiCallSpec['scope'];
  group: string;
  resource: string;
  verbs: string[];
}

/** Least-privilege rules: one per (scope, group, resource) with exactly the verbs called, sorted. */
export function requiredRules(): RbacRule[] {
  const rules = new Map<string, RbacRule>();
  for (const c of Object.values(API_CALLS) as ApiCallSpec[]) {
    const key = `${c.scope}|${c.group}|${c.resource}`;
    const r = rules.get(key) ?? { scope: c.scope, group: c.group, resource: c.resource, verbs: [] };
    if (!r.verbs.includes(c.verb)) r.verbs.push(c.verb);
    rules.set(key, r);
  }
  return [...rules.values()]
    .map((r) => ({ ...r, verbs: r.verbs.sort() }))
    .sort((a, b) =>
      `${a.scope}|${a.group}|${a.resource}`.localeCompare(`${b.scope}|${b.group}|${b.resource}`),
    );
}
