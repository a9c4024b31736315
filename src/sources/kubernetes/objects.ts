// The subset of Kubernetes objects the source reads (plain JSON as served), and the names it reacts to.

export { DEFAULT_LOAD_BALANCER_CLASS } from '../../model/kubernetes';

/** Annotations read on a Service. */
export const ANNOTATIONS = {
  /** VIP address(es), comma-separated, at most one per family: wins over spec.loadBalancerIP and the pool. */
  vip: 'peak-xdp.io/vip',
  /** Backend weights: "key=weight,..." where key is an endpoint address or its Pod name (targetRef.name). */
  weights: 'peak-xdp.io/backend-weights',
  /** Maglev table size (a prime); default from the config model. */
  tableSize: 'peak-xdp.io/table-size',
  /** "false" turns the connection table off for the Service's VIPs. */
  conntrack: 'peak-xdp.io/conntrack',
  /** "node" (default): encapsulate to the Nodes hosting endpoints; "pod": to the Pod IPs (flat Pod network). */
  backendMode: 'peak-xdp.io/backend-mode',
} as const;

/** Where a Service's traffic is encapsulated to: its endpoints' Nodes (kube-proxy DNATs there) or its Pods. */
export type BackendMode = 'node' | 'pod';

export const DEFAULT_BACKEND_MODE: BackendMode = 'node';

/** Label that ties an EndpointSlice to its Service. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  /** RFC 3339, set by the API server: the older of two claims to one address wins it. */
  creationTimestamp?: string | null;
  labels?: Record<string, string> | null;
  annotations?: Record<string, string> | null;
}

export interface ServicePort {
  name?: string | null;
  protocol?: string | null;
  port: number;
  /** Allocated for LoadBalancer Services unless spec.allocateLoadBalancerNodePorts is false. */
  nodePort?: number | null;
  /** Number or the name of a container port (resolved through the EndpointSlice ports). */
  targetPort?: number | string | null;
}

export interface LoadBalancerIngress {
  ip?: string | null;
  hostname?: string | null;
  ipMode?: string | null;
}

export interface Service {
  metadata: ObjectMeta;
  spec?: {
    type?: string | null;
    loadBalancerClass?: string | null;
    loadBalancerIP?: string | null;
    ipFamilies?: string[] | null;
    sessionAffinity?: string | null;
    /** "Cluster" (default) or "Local". */
    externalTrafficPolicy?: string | null;
    /** kube-proxy's per-Service health port on every node (ETP Local): 200 while the node has local endpoints. */
    healthCheckNodePort?: number | null;
    ports?: ServicePort[] | null;
  } | null;
  status?: { loadBalancer?: { ingress?: LoadBalancerIngress[] | null } | null } | null;
}

export interface EndpointConditions {
  ready?: boolean | null;
  serving?: boolean | null;
  terminating?: boolean | null;
}

export interface Endpoint {
  addresses: string[];
  conditions?: EndpointConditions | null;
  nodeName?: string | null;
  targetRef?: { kind?: string | null; name?: string | null; namespace?: string | null } | null;
}

export interface EndpointPort {
  name?: string | null;
  protocol?: string | null;
  port?: number | null;
}

export interface EndpointSlice {
  metadata: ObjectMeta;
  addressType: string;
  endpoints?: Endpoint[] | null;
  ports?: EndpointPort[] | null;
}

export interface NodeAddress {
  type: string;
  address: string;
}

export interface NodeCondition {
  type: string;
  status: string;
}

/** A Node (cluster-scoped): what node-mode backends need, its addresses and Ready condition. */
export interface Node {
  metadata: ObjectMeta;
  status?: {
    addresses?: NodeAddress[] | null;
    conditions?: NodeCondition[] | null;
  } | null;
}

/** "namespace/name": the cache key of a namespaced object. */
export function objectKey(meta: ObjectMeta): string {
  return `${meta.namespace ?? ''}/${meta.name ?? ''}`;
}

/** A Service this source handles: type LoadBalancer with our loadBalancerClass. */
export function isOurService(svc: Service, loadBalancerClass: string): boolean {
  return svc.spec?.type === 'LoadBalancer' && svc.spec.loadBalancerClass === loadBalancerClass;
}
