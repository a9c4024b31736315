// Builders of Kubernetes objects for tests: LoadBalancer Services and EndpointSlices as the API serves them.
import type { Obj } from './fake-apiserver';

export const LB_CLASS = 'peak-xdp.io/lb';

export function service(opts: {
  name: string;
  namespace?: string;
  vip?: string;
  loadBalancerIP?: string;
  lbClass?: string | null;
  type?: string;
  ports?: { name?: string; port: number; targetPort?: number | string; protocol?: string }[];
  annotations?: Record<string, string>;
}): Obj {
  const annotations: Record<string, string> = { ...(opts.annotations ?? {}) };
  if (opts.vip) annotations['peak-xdp.io/vip'] = opts.vip;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: opts.name, namespace: opts.namespace ?? 'default', annotations },
    spec: {
      type: opts.type ?? 'LoadBalancer',
      ...(opts.lbClass === null ? {} : { loadBalancerClass: opts.lbClass ?? LB_CLASS }),
      ...(opts.loadBalancerIP ? { loadBalancerIP: opts.loadBalancerIP } : {}),
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
      ...(e.pod ? { targetRef: { kind: 'Pod', name: e.pod, namespace: opts.namespace ?? 'default' } } : {}),
    })),
  };
}
