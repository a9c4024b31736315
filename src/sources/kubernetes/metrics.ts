// Source metrics, registered on the registry the daemon owns: watch events, re-lists, API errors, event-to-datapath.
import { Counter, Gauge, Histogram, Registry } from '../../metrics/prom';
import type { ApiCall } from './api-calls';
import { NODE_SKIP_REASONS, NodeSkipReason } from './node-backends';

export type ResourceKind = 'services' | 'endpointslices' | 'nodes';

export interface SourceMetrics {
  watchEvent(kind: ResourceKind, type: string): void;
  relist(kind: ResourceKind, reason: 'start' | 'gone' | 'error'): void;
  apiError(call: ApiCall | 'watch'): void;
  /** Seconds from the first watch event of a batch to the datapath having applied it (onChange resolved). */
  eventToDatapath(seconds: number): void;
  /** Node-mode skips in the current translation (Service x node x family), by reason. */
  nodeSkips(counts: ReadonlyMap<NodeSkipReason, number>): void;
}

/** prom-client metrics on `registry` (names prefixed peak_xdp_k8s_). */
export function createSourceMetrics(registry: Registry): SourceMetrics {
  const events = new Counter({
    name: 'peak_xdp_k8s_watch_events_total',
    help: 'Kubernetes watch events received, by resource kind and event type',
    labelNames: ['kind', 'type'],
    registers: [registry],
  });
  const relists = new Counter({
    name: 'peak_xdp_k8s_relists_total',
    help: 'Full lists of a resource kind (start, 410 Gone, or after an error)',
    labelNames: ['kind', 'reason'],
    registers: [registry],
  });
  const errors = new Counter({
    name: 'peak_xdp_k8s_api_errors_total',
    help: 'Failed Kubernetes API calls and dropped watches, by call',
    labelNames: ['call'],
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'peak_xdp_k8s_event_to_datapath_seconds',
    help: 'Time from a watch event to the datapath update that includes it',
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const skips = new Gauge({
    name: 'peak_xdp_k8s_node_backends_skipped',
    help: 'Node-mode backends left out of a Service VIP: node without an InternalIP of the family, endpoints without nodeName, or on an unknown Node',
    labelNames: ['reason'],
    registers: [registry],
  });
  for (const r of NODE_SKIP_REASONS) skips.set({ reason: r }, 0);
  return {
    nodeSkips: (counts) => {
      for (const r of NODE_SKIP_REASONS) skips.set({ reason: r }, counts.get(r) ?? 0);
    },
    watchEvent: (kind, type) => events.inc({ kind, type }),
    relist: (kind, reason) => relists.inc({ kind, reason }),
    apiError: (call) => errors.inc({ call }),
    eventToDatapath: (s) => latency.observe(s),
  };
}

/** Metrics that go nowhere (when the caller passes no registry). */
export const noMetrics: SourceMetrics = {
  watchEvent: () => undefined,
  relist: () => undefined,
  apiError: () => undefined,
  eventToDatapath: () => undefined,
  nodeSkips: () => undefined,
};
