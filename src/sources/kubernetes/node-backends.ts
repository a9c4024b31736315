// Pure node-mode decisions: a Service's backends are the Nodes hosting its endpoints (kube-proxy DNATs there).
import type { BackendConfig, HealthCheckConfig } from '../../model/config';
import { DEFAULTS } from '../../model/defaults';
import { showValue } from '../../model/errors';
import { canonicalIp, IpFamily, parseIp } from '../../model/ip';
import {
  ANNOTATIONS,
  BackendMode,
  DEFAULT_BACKEND_MODE,
  Endpoint,
  Node,
  Service,
  ServicePort,
} from './objects';

/** What node mode reads of a Node: Ready, and its first InternalIP of each family (canonical). */
export interface NodeInfo {
  name: string;
  /** Condition Ready is "True" (a missing condition is not ready). */
  ready: boolean;
  ipv4: string | null;
  ipv6: string | null;
  /**
   * Why the node can never be a node-mode backend, or null. An LB node (label peak-xdp.io/lb-node=true) runs the
   * balancer on its NIC, not the decap (one XDP program per interface), so packets encapsulated to it are not
   * unwrapped; a node labelled node.kubernetes.io/exclude-from-external-load-balancers (the label cloud load
   * balancers honour) is left out on request.
   */
  excluded: string | null;
}

/** Node label of LB nodes (the LB DaemonSet's nodeSelector). */
export const LB_NODE_LABEL = 'peak-xdp.io/lb-node';
/** Well-known label: leave this node out of external load balancers' backends. */
export const EXCLUDE_LB_LABEL = 'node.kubernetes.io/exclude-from-external-load-balancers';

export function nodeInfo(node: Node): NodeInfo {
  let ipv4: string | null = null;
  let ipv6: string | null = null;
  for (const a of node.status?.addresses ?? []) {
    if (a?.type !== 'InternalIP' || typeof a.address !== 'string') continue;
    const c = canonicalIp(a.address);
    if (c === null) continue;
    if (parseIp(c)!.family === 4) ipv4 ??= c;
    else ipv6 ??= c;
  }
  const ready = (node.status?.conditions ?? []).some((c) => c?.type === 'Ready' && c.status === 'True');
  const labels = node.metadata.labels ?? {};
  const excluded =
    labels[LB_NODE_LABEL] === 'true'
      ? `it is an LB node (${LB_NODE_LABEL}=true: its NIC runs the balancer, not the decap)`
      : EXCLUDE_LB_LABEL in labels
        ? `it has the label ${EXCLUDE_LB_LABEL}`
        : null;
  return { name: node.metadata.name ?? '', ready, ipv4, ipv6, excluded };
}

/**
 * The part of a Node the source keeps (a Node object carries image lists and more, tens of KB at times):
 * identity and labels (per-node settings), InternalIP addresses and the Ready condition.
 */
export function slimNode(node: Node): Node {
  const m = node.metadata;
  return {
    metadata: { name: m?.name, uid: m?.uid, resourceVersion: m?.resourceVersion, labels: m?.labels ?? null },
    status: {
      addresses: (node.status?.addresses ?? []).filter((a) => a?.type === 'InternalIP'),
      conditions: (node.status?.conditions ?? [])
        .filter((c) => c?.type === 'Ready')
        .map((c) => ({ type: c.type, status: c.status })),
    },
  };
}

/** Equal NodeInfos give equal node-mode translations: what the translation cache compares. */
export const sameNodeInfo = (a: NodeInfo, b: NodeInfo): boolean =>
  a.name === b.name &&
  a.ready === b.ready &&
  a.ipv4 === b.ipv4 &&
  a.ipv6 === b.ipv6 &&
  a.excluded === b.excluded;

const annField = (name: string): string => `metadata.annotations["${name}"]`;

/** The Service's backend mode from its annotation (absent: node). */
export function backendModeOf(
  svc: Service,
): { ok: true; mode: BackendMode } | { ok: false; message: string } {
  const text = svc.metadata.annotations?.[ANNOTATIONS.backendMode] ?? undefined;
  if (text === undefined) return { ok: true, mode: DEFAULT_BACKEND_MODE };
  if (text === 'node' || text === 'pod') return { ok: true, mode: text };
  return {
    ok: false,
    message: `${annField(ANNOTATIONS.backendMode)}: ${showValue(text)} is not "node" or "pod"; Service not programmed`,
  };
}

export type TrafficPolicy = 'Local' | 'Cluster';

/** spec.externalTrafficPolicy: "Local", else Cluster (the API's default). */
export const trafficPolicyOf = (svc: Service): TrafficPolicy =>
  svc.spec?.externalTrafficPolicy === 'Local' ? 'Local' : 'Cluster';

/**
 * The check of every node backend of one Service port: is the node (and its kube-proxy) alive? Which nodes
 * have ready or terminating endpoints the EndpointSlices already say. ETP Local with a healthCheckNodePort: TCP
 * to kube-proxy's health server there. Not HTTP GET /healthz: kube-proxy answers 503 on purpose while a node's
 * endpoints are all terminating, and that would take a draining node down and reset the connections it still
 * serves (seen in the node-mode e2e test: 12 of 24 keep-alive connections reset). Otherwise TCP to the node
 * on the port's nodePort (kube-proxy serves it on every node address) or, without one, the port itself.
 */
export function nodeHealthCheck(svc: Service, sp: ServicePort): HealthCheckConfig {
  const hc = svc.spec?.healthCheckNodePort;
  if (trafficPolicyOf(svc) === 'Local' && typeof hc === 'number' && hc > 0 && hc <= 65535)
    return { ...DEFAULTS.healthCheck, type: 'tcp', port: hc };
  const np = sp.nodePort;
  const port = typeof np === 'number' && np > 0 && np <= 65535 ? np : sp.port;
  return { ...DEFAULTS.healthCheck, type: 'tcp', port };
}

/** Why a node or endpoint does not make a backend (non-blocking problems: logged, counted, an Event). */
export type NodeSkipReason = 'NodeAddressMissing' | 'NodeExcluded' | 'EndpointWithoutNode' | 'UnknownNode';

export const NODE_SKIP_REASONS: readonly NodeSkipReason[] = [
  'NodeAddressMissing',
  'NodeExcluded',
  'EndpointWithoutNode',
  'UnknownNode',
];

export interface NodeSkip {
  reason: NodeSkipReason;
  message: string;
}

/** One endpoint of the VIP's family, already reduced to its state (deduplicated by address across slices). */
export interface NodeEndpoint {
  address: string;
  state: 'up' | 'drain';
  nodeName: string | null;
}

export interface NodeBackendsInput {
  family: IpFamily;
  policy: TrafficPolicy;
  endpoints: readonly NodeEndpoint[];
  nodes: ReadonlyMap<string, NodeInfo>;
  /** peak-xdp.io/backend-weights entries: by node name or node address (override the endpoint count). */
  weights: ReadonlyMap<string, number>;
}

const WEIGHT_MAX = 65535;

const familyName = (f: IpFamily): string => (f === 4 ? 'IPv4' : 'IPv6');

/**
 * Node backends of one VIP. Local: nodes with >= 1 ready endpoint (weight = their count) and nodes whose
 * endpoints are all serving-but-terminating (drain: established flows stay). Cluster: every Ready node,
 * weight 1, endpoints or not (kube-proxy forwards to any endpoint). Either way a node must be Ready and
 * have an InternalIP of the family. Backends sorted by address; skips in a stable order.
 */
export function nodeBackends(input: NodeBackendsInput): { backends: BackendConfig[]; skipped: NodeSkip[] } {
  const fam = familyName(input.family);
  const addrOf = (n: NodeInfo): string | null => (input.family === 4 ? n.ipv4 : n.ipv6);
  const skipped: NodeSkip[] = [];
  const noAddress = (n: NodeInfo): void => {
    skipped.push({
      reason: 'NodeAddressMissing',
      message: `Node ${showValue(n.name)} has no ${fam} InternalIP in status.addresses; not a backend of the ${fam} VIP`,
    });
  };
  const weightOf = (n: NodeInfo, address: string, dflt: number): number =>
    input.weights.get(n.name) ?? input.weights.get(address) ?? dflt;
  const excludedNode = (n: NodeInfo): boolean => {
    if (n.excluded === null) return false;
    skipped.push({
      reason: 'NodeExcluded',
      message: `Node ${showValue(n.name)} is not a backend: ${n.excluded}`,
    });
    return true;
  };
  const out: BackendConfig[] = [];
  if (input.policy === 'Cluster') {
    for (const n of [...input.nodes.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (!n.ready) continue;
      // Silently: under Cluster every LB node would be named on every Service.
      if (n.excluded !== null) continue;
      const address = addrOf(n);
      if (address === null) noAddress(n);
      else out.push({ address, family: input.family, weight: weightOf(n, address, 1), drain: false });
    }
  } else {
    const perNode = new Map<string, { ready: number; serving: number }>();
    const orphans: string[] = [];
    for (const ep of input.endpoints) {
      if (ep.nodeName === null || ep.nodeName === '') {
        orphans.push(ep.address);
        continue;
      }
      const c = perNode.get(ep.nodeName) ?? { ready: 0, serving: 0 };
      if (ep.state === 'up') c.ready++;
      else c.serving++;
      perNode.set(ep.nodeName, c);
    }
    if (orphans.length > 0) {
      orphans.sort();
      skipped.push({
        reason: 'EndpointWithoutNode',
        message: `${orphans.length} ${fam} endpoint(s) without nodeName (${orphans.slice(0, 3).join(', ')}${orphans.length > 3 ? ', ...' : ''}); not counted on any node`,
      });
    }
    for (const name of [...perNode.keys()].sort()) {
      const c = perNode.get(name)!;
      const n = input.nodes.get(name);
      if (n === undefined) {
        skipped.push({
          reason: 'UnknownNode',
          message: `endpoints on Node ${showValue(name)}, which does not exist (yet or any more); not a backend`,
        });
        continue;
      }
      if (!n.ready) continue;
      if (excludedNode(n)) continue;
      const address = addrOf(n);
      if (address === null) {
        noAddress(n);
        continue;
      }
      const drain = c.ready === 0;
      // A drained node is out of the Maglev table whatever its weight: 1 keeps it a valid backend.
      const weight = drain ? 1 : weightOf(n, address, Math.min(c.ready, WEIGHT_MAX));
      out.push({ address, family: input.family, weight, drain });
    }
  }
  // Two nodes sharing an address (misconfiguration): one backend; up wins over drain, then the larger weight.
  const byAddress = new Map<string, BackendConfig>();
  for (const b of out) {
    const prev = byAddress.get(b.address);
    if (prev === undefined || (prev.drain && !b.drain) || (prev.drain === b.drain && b.weight > prev.weight))
      byAddress.set(b.address, b);
  }
  const backends = [...byAddress.values()].sort((x, y) =>
    x.address < y.address ? -1 : x.address > y.address ? 1 : 0,
  );
  return { backends, skipped };
}

/** Node names a Local-policy Service depends on: every nodeName in its endpoints (any family, any port). */
export function endpointNodeNames(endpoints: readonly Endpoint[]): Set<string> {
  const out = new Set<string>();
  for (const ep of endpoints) if (ep.nodeName) out.add(ep.nodeName);
  return out;
}
