// The thin shell over @kubernetes/client-node (ESM, loaded with a dynamic import): list/watch I/O, status, Events, Leases.
import type * as k8s from '@kubernetes/client-node';
import type { ApiCall } from './api-calls';
import type { LeaseSpec } from './election';
import type { SourceMetrics } from './metrics';
import { noMetrics } from './metrics';
import type { EndpointSlice, LoadBalancerIngress, Node, Service } from './objects';
import type { ListPage, ReflectorIO, WatchEventType } from './reflector';

/** Everything the source asks of the API server; connectKube() implements it with the real client. */
export interface KubeApi {
  services: ReflectorIO<Service>;
  endpointSlices: ReflectorIO<EndpointSlice>;
  nodes: ReflectorIO<Node>;
  /** One Node by name (null: none such). */
  getNode(name: string): Promise<Node | null>;
  patchServiceStatus(opts: {
    namespace: string;
    name: string;
    ingress: LoadBalancerIngress[];
  }): Promise<void>;
  createEvent(opts: {
    namespace: string;
    service: { name: string; uid: string };
    type: 'Normal' | 'Warning';
    reason: string;
    message: string;
    /** Node / identity that reports it. */
    reporter: string;
  }): Promise<void>;
  getLease(opts: {
    namespace: string;
    name: string;
  }): Promise<{ spec: LeaseSpec; resourceVersion: string } | null>;
  /** false when someone else wrote first (409 Conflict / AlreadyExists). */
  createLease(opts: { namespace: string; name: string; spec: LeaseSpec }): Promise<boolean>;
  updateLease(opts: {
    namespace: string;
    name: string;
    spec: LeaseSpec;
    resourceVersion: string;
  }): Promise<boolean>;
}

export interface ConnectOptions {
  /** Path of a kubeconfig file; absent: in-cluster config (service account token and CA). */
  kubeconfig?: string;
  metrics?: SourceMetrics;
  /** Server-side watch timeout (the server ends the stream; we resume from the last resourceVersion). */
  watchTimeoutSeconds?: number;
  /** Items per list page. */
  pageSize?: number;
}

type Client = typeof k8s;

let clientModule: Promise<Client> | null = null;

/**
 * A real import(): TypeScript's CommonJS output turns import() into require(), which Node 20 serves through
 * require(esm), compiling and running the client's hundreds of modules in one synchronous stretch (~1.1 s
 * without an event-loop turn at daemon start). The ESM loader reads and compiles them over many turns (the
 * longest ~0.2 s). Resolved from this file, like the require was.
 */
const importEsm = new Function('specifier', 'return import(specifier)') as (
  specifier: string,
) => Promise<unknown>;

/** Loads @kubernetes/client-node once. */
export function loadClient(): Promise<Client> {
  clientModule ??= importEsm('@kubernetes/client-node') as Promise<Client>;
  return clientModule;
}

const statusCode = (e: unknown): number | undefined => {
  const x = e as { code?: unknown; statusCode?: unknown } | null;
  if (x === null || typeof x !== 'object') return undefined;
  if (typeof x.code === 'number') return x.code;
  return typeof x.statusCode === 'number' ? x.statusCode : undefined;
};

export async function connectKube(opts: ConnectOptions): Promise<KubeApi> {
  const client = await loadClient();
  const metrics = opts.metrics ?? noMetrics;
  const kc = new client.KubeConfig();
  if (opts.kubeconfig !== undefined) kc.loadFromFile(opts.kubeconfig);
  else kc.loadFromCluster();
  if (kc.getCurrentCluster() === null)
    throw new Error(`kubeconfig ${opts.kubeconfig ?? '(in-cluster)'}: no current cluster`);
  const core = kc.makeApiClient(client.CoreV1Api);
  const discovery = kc.makeApiClient(client.DiscoveryV1Api);
  const coordination = kc.makeApiClient(client.CoordinationV1Api);
  const watcher = new client.Watch(kc);
  const pageSize = opts.pageSize ?? 500;
  const timeoutSeconds = opts.watchTimeoutSeconds ?? 300;

  /** Every API call goes through here under its API_CALLS name (so RBAC and metrics see the same list). */
  async function call<R>(name: ApiCall, fn: () => Promise<R>): Promise<R> {
    try {
      return await fn();
    } catch (e) {
      metrics.apiError(name);
      throw e;
    }
  }

  function io<T>(spec: {
    listCall: ApiCall;
    watchCall: ApiCall;
    path: string;
    list: (
      cont: string | undefined,
    ) => Promise<{ items: unknown[]; metadata?: { resourceVersion?: string; _continue?: string } }>;
  }): ReflectorIO<T> {
    return {
      list: () =>
        call(spec.listCall, async (): Promise<ListPage<T>> => {
          const items: T[] = [];
          let cont: string | undefined;
          let rv = '';
          // Pages of one list share its resourceVersion; the last page's is kept.
          for (let page = 0; page < 100_000; page++) {
            const res = await spec.list(cont);
            items.push(...(res.items as T[]));
            rv = res.metadata?.resourceVersion ?? rv;
            cont = res.metadata?._continue || undefined;
            if (cont === undefined) break;
          }
          return { items, resourceVersion: rv };
        }),
      watch: (w) =>
        call(spec.watchCall, async () => {
          let failed = false;
          const controller = await watcher.watch(
            spec.path,
            { resourceVersion: w.resourceVersion, allowWatchBookmarks: true, timeoutSeconds },
            (type: string, object: unknown) => w.onEvent(type as WatchEventType, object),
            (err: unknown) => {
              if (err !== null && err !== undefined && !failed) {
                failed = true;
                if ((err as Error).name !== 'AbortError') metrics.apiError(spec.watchCall);
              }
              w.onDone(err ?? null);
            },
          );
          return { stop: () => controller.abort() };
        }),
    };
  }

  return {
    services: io<Service>({
      listCall: 'listServices',
      watchCall: 'watchServices',
      path: '/api/v1/services',
      list: (cont) => core.listServiceForAllNamespaces({ limit: pageSize, _continue: cont }),
    }),
    endpointSlices: io<EndpointSlice>({
      listCall: 'listEndpointSlices',
      watchCall: 'watchEndpointSlices',
      path: '/apis/discovery.k8s.io/v1/endpointslices',
      list: (cont) => discovery.listEndpointSliceForAllNamespaces({ limit: pageSize, _continue: cont }),
    }),
    nodes: io<Node>({
      listCall: 'listNodes',
      watchCall: 'watchNodes',
      path: '/api/v1/nodes',
      list: (cont) => core.listNode({ limit: pageSize, _continue: cont }),
    }),
    getNode: (name) =>
      call('getNode', async () => {
        try {
          return (await core.readNode({ name })) as unknown as Node;
        } catch (e) {
          if (statusCode(e) === 404) return null;
          throw e;
        }
      }),
    patchServiceStatus: ({ namespace, name, ingress }) =>
      call('patchServiceStatus', async () => {
        await core.patchNamespacedServiceStatus(
          { namespace, name, body: { status: { loadBalancer: { ingress } } } },
          client.setHeaderOptions('Content-Type', client.PatchStrategy.MergePatch),
        );
      }),
    createEvent: (e) =>
      call('createEvent', async () => {
        const now = new Date().toISOString();
        await core.createNamespacedEvent({
          namespace: e.namespace,
          body: {
            metadata: { generateName: `${e.service.name}.`, namespace: e.namespace },
            involvedObject: {
              apiVersion: 'v1',
              kind: 'Service',
              namespace: e.namespace,
              name: e.service.name,
              uid: e.service.uid,
            },
            type: e.type,
            reason: e.reason,
            message: e.message,
            source: { component: 'peak-xdp', host: e.reporter },
            reportingComponent: 'peak-xdp.io/lb',
            reportingInstance: e.reporter,
            // The generated model types these as Date; the wire wants RFC 3339 text, which passes through as is.
            firstTimestamp: now as unknown as Date,
            lastTimestamp: now as unknown as Date,
            count: 1,
          },
        });
      }),
    getLease: ({ namespace, name }) =>
      call('getLease', async () => {
        try {
          const l = await coordination.readNamespacedLease({ namespace, name });
          const s = l.spec ?? {};
          return {
            resourceVersion: l.metadata?.resourceVersion ?? '',
            spec: {
              holderIdentity: s.holderIdentity ?? null,
              leaseDurationSeconds: s.leaseDurationSeconds ?? 0,
              acquireTime: s.acquireTime ? String(s.acquireTime) : null,
              renewTime: s.renewTime ? String(s.renewTime) : null,
              leaseTransitions: s.leaseTransitions ?? 0,
            },
          };
        } catch (e) {
          if (statusCode(e) === 404) return null;
          throw e;
        }
      }),
    createLease: ({ namespace, name, spec }) =>
      call('createLease', async () => {
        try {
          await coordination.createNamespacedLease({
            namespace,
            body: { metadata: { name, namespace }, spec: leaseBody(spec) },
          });
          return true;
        } catch (e) {
          if (statusCode(e) === 409) return false;
          throw e;
        }
      }),
    updateLease: ({ namespace, name, spec, resourceVersion }) =>
      call('updateLease', async () => {
        try {
          await coordination.replaceNamespacedLease({
            namespace,
            name,
            body: { metadata: { name, namespace, resourceVersion }, spec: leaseBody(spec) },
          });
          return true;
        } catch (e) {
          if (statusCode(e) === 409) return false;
          throw e;
        }
      }),
  };
}

/** Lease spec for the generated client: MicroTime fields pass through as RFC 3339 text. */
function leaseBody(spec: LeaseSpec): k8s.V1LeaseSpec {
  return {
    holderIdentity: spec.holderIdentity ?? undefined,
    leaseDurationSeconds: spec.leaseDurationSeconds,
    acquireTime: (spec.acquireTime ?? undefined) as unknown as k8s.V1MicroTime,
    renewTime: (spec.renewTime ?? undefined) as unknown as k8s.V1MicroTime,
    leaseTransitions: spec.leaseTransitions,
  };
}
