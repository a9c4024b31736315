// Builders of Kubernetes objects for tests: LoadBalancer Services, EndpointSlices and Nodes as the API serves them.
import type { Obj } from './fake-apiserver';

export const LB_CLASS = 'peak-xdp.io/lb';

export function service(opts: {
  name: string;
  namespace?: string;
  vip?: string;
  loadBalancerIP?: string;
  lbClass?: string | null;
  type?: string;
  ports?: {
    name?: string;
    port: number;
    targetPort?: number | string;
    protocol?: string;
    nodePort?: number;
  }[];
  annotations?: Record<string, string>;
  /**
   * peak-xdp.io/backend-mode. Unset: "pod", because most fixtures describe Pod-IP backends (they predate
   * node mode, the product default); null: no annotation (the default mode, node).
   */
  backendMode?: 'node' | 'pod' | string | null;
  externalTrafficPolicy?: 'Cluster' | 'Local';
  healthCheckNodePort?: number;
}): Obj {
  const annotations: Record<string, string> = { ...(opts.annotations ?? {}) };
  if (opts.vip) annotations['peak-xdp.io/vip'] = opts.vip;
  if (opts.backendMode !== null) annotations['peak-xdp.io/backend-mode'] ??= opts.backendMode ?? 'pod';
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: opts.name, namespace: opts.namespace ?? 'default', annotations },
    spec: {
      type: opts.type ?? 'LoadBalancer',
      ...(opts.lbClass === null ? {} : { loadBalancerClass: opts.lbClass ?? LB_CLASS }),
      ...(opts.loadBalancerIP ? { loadBalancerIP: opts.loadBalancerIP } : {}),
      ...(opts.externalTrafficPolicy ? { externalTrafficPolicy: opts.externalTrafficPolicy } : {}),
      ...(opts.healthCheckNodePort ? { healthCheckNodePort: opts.healthCheckNodePort } : {}),
      ports: (opts.ports ?? [{ name: 'http', port: 80 }]).map((p) => ({
        protocol: 'TCP',
        targetPort: p.port,
        ...p,
      })),
    },
    status: { loadBalancer: {} },
  };
}

export interface EndpointSpec {
  ip: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  pod?: string;
  /** The Node hosting the endpoint (EndpointSlice endpoints[].nodeName). */
  node?: string;
}

export function slice(opts: {
  name: string;
  service: string;
  namespace?: string;
  addressType?: 'IPv4' | 'IPv6';
  ports?: { name?: string; port: number; protocol?: string }[];
  endpoints: EndpointSpec[];
}): Obj {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: opts.name,
      namespace: opts.namespace ?? 'default',
      labels: { 'kubernetes.io/service-name': opts.service },
    },
    addressType: opts.addressType ?? 'IPv4',
    ports: (opts.ports ?? [{ name: 'http', port: 80 }]).map((p) => ({ protocol: 'TCP', ...p })),
    endpoints: opts.endpoints.map((e) => ({
      addresses: [e.ip],
      conditions: {
        ready: e.ready ?? true,
        serving: e.serving ?? e.ready ?? true,
        terminating: e.terminating ?? false,
      },
      ...(e.node ? { nodeName: e.node } : {}),
      ...(e.pod ? { targetRef: { kind: 'Pod', name: e.pod, namespace: opts.namespace ?? 'default' } } : {}),
    })),
  };
}

/** A Node as the kubelet reports it: InternalIP addresses (any families) and the Ready condition. */
export function node(opts: {
  name: string;
  /** InternalIP addresses. */
  ips?: string[];
  /** Other addresses (e.g. ExternalIP, Hostname), which node mode ignores. */
  otherAddresses?: { type: string; address: string }[];
  /** Ready condition status; null: no Ready condition at all. */
  ready?: boolean | null;
  labels?: Record<string, string>;
}): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: opts.name, labels: { 'kubernetes.io/hostname': opts.name, ...(opts.labels ?? {}) } },
    status: {
      addresses: [
        ...(opts.ips ?? []).map((address) => ({ type: 'InternalIP', address })),
        ...(opts.otherAddresses ?? []),
        { type: 'Hostname', address: opts.name },
      ],
      conditions:
        opts.ready === null
          ? []
          : [
              { type: 'MemoryPressure', status: 'False' },
              { type: 'Ready', status: opts.ready === false ? 'False' : 'True' },
            ],
    },
  };
}
