// The API shell: list/watch I/O, status, Events, Leases as plain JSON requests (http.ts). @kubernetes/client-node
// (ESM, loaded with a dynamic import) only when the kubeconfig needs its KubeConfig (kubeconfig.ts says when).
import type * as k8s from '@kubernetes/client-node';
import type https from 'node:https';
import type { ApiCall } from './api-calls';
import { createRequester, RequestAuth } from './http';
import { accessPlan, authOf } from './kubeconfig';
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
  /** Closes idle kept-alive connections (once every watch stopped). */
  close?(): void;
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

/** How connectKube reaches the cluster: this package's own kubeconfig reader, or the client's KubeConfig. */
export type ClientKind = { kind: 'lite' } | { kind: 'full'; because: string };

export async function connectKube(opts: ConnectOptions): Promise<KubeApi & { client: ClientKind }> {
  const metrics = opts.metrics ?? noMetrics;
  const plan = accessPlan({ kubeconfig: opts.kubeconfig });
  let server: string;
  let auth: () => Promise<RequestAuth>;
  let clientKind: ClientKind;
  if (plan.ok) {
    server = plan.spec.server;
    auth = authOf(plan.spec);
    clientKind = { kind: 'lite' };
  } else {
    // Exec plugins, auth providers, proxies: the client's KubeConfig supplies headers, TLS and agent.
    const client = await loadClient();
    const kc = new client.KubeConfig();
    if (opts.kubeconfig !== undefined) kc.loadFromFile(opts.kubeconfig);
    else kc.loadFromCluster();
    const cluster = kc.getCurrentCluster();
    if (cluster === null)
      throw new Error(`kubeconfig ${opts.kubeconfig ?? '(in-cluster)'}: no current cluster`);
    server = cluster.server;
    auth = () => requestAuth(kc, cluster.proxyUrl);
    clientKind = { kind: 'full', because: plan.needsClient };
  }
  // Plain JSON over one keep-alive agent, watches included (http.ts says why).
  const http = createRequester({ server, auth });
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

  function io<T>(spec: { listCall: ApiCall; watchCall: ApiCall; path: string }): ReflectorIO<T> {
    return {
      list: () =>
        call(spec.listCall, async (): Promise<ListPage<T>> => {
          const items: T[] = [];
          let cont: string | undefined;
          let rv = '';
          // Pages of one list share its resourceVersion; the last page's is kept.
          for (let page = 0; page < 100_000; page++) {
            const res = await http.json<ListBody<T>>({
              method: 'GET',
              path: spec.path,
              query: { limit: pageSize, continue: cont },
            });
            for (const item of res.items ?? []) items.push(item);
            rv = res.metadata?.resourceVersion ?? rv;
            cont = res.metadata?.continue || undefined;
            if (cont === undefined) break;
          }
          return { items, resourceVersion: rv };
        }),
      watch: (w) =>
        call(spec.watchCall, async () => {
          const stream = await http.lines(
            {
              path: spec.path,
              query: {
                watch: 'true',
                resourceVersion: w.resourceVersion,
                allowWatchBookmarks: 'true',
                timeoutSeconds,
              },
            },
            (line) => {
              const ev = line as { type?: unknown; object?: unknown } | null;
              if (typeof ev?.type === 'string') w.onEvent(ev.type as WatchEventType, ev.object);
            },
            (err) => {
              if (err !== null) metrics.apiError(spec.watchCall);
              w.onDone(err);
            },
          );
          return { stop: () => stream.stop() };
        }),
    };
  }

  const seg = encodeURIComponent;
  const leasePath = (namespace: string, name?: string): string =>
    `/apis/coordination.k8s.io/v1/namespaces/${seg(namespace)}/leases${name === undefined ? '' : `/${seg(name)}`}`;

  return {
    client: clientKind,
    close: () => http.close(),
    services: io<Service>({ listCall: 'listServices', watchCall: 'watchServices', path: '/api/v1/services' }),
    endpointSlices: io<EndpointSlice>({
      listCall: 'listEndpointSlices',
      watchCall: 'watchEndpointSlices',
      path: '/apis/discovery.k8s.io/v1/endpointslices',
    }),
    nodes: io<Node>({ listCall: 'listNodes', watchCall: 'watchNodes', path: '/api/v1/nodes' }),
    getNode: (name) =>
      call('getNode', async () => {
        try {
          return await http.json<Node>({ method: 'GET', path: `/api/v1/nodes/${seg(name)}` });
        } catch (e) {
          if (statusCode(e) === 404) return null;
          throw e;
        }
      }),
    patchServiceStatus: ({ namespace, name, ingress }) =>
      call('patchServiceStatus', async () => {
        await http.json({
          method: 'PATCH',
          path: `/api/v1/namespaces/${seg(namespace)}/services/${seg(name)}/status`,
          contentType: 'application/merge-patch+json',
          body: { status: { loadBalancer: { ingress } } },
        });
      }),
    createEvent: (e) =>
      call('createEvent', async () => {
        const now = new Date().toISOString();
        await http.json({
          method: 'POST',
          path: `/api/v1/namespaces/${seg(e.namespace)}/events`,
          body: {
            apiVersion: 'v1',
            kind: 'Event',
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
            firstTimestamp: now,
            lastTimestamp: now,
            count: 1,
          },
        });
      }),
    getLease: ({ namespace, name }) =>
      call('getLease', async () => {
        try {
          const l = await http.json<WireLease>({ method: 'GET', path: leasePath(namespace, name) });
          const s = l.spec ?? {};
          return {
            resourceVersion: l.metadata?.resourceVersion ?? '',
            spec: {
              holderIdentity: s.holderIdentity ?? null,
              leaseDurationSeconds: s.leaseDurationSeconds ?? 0,
              acquireTime: s.acquireTime ?? null,
              renewTime: s.renewTime ?? null,
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
          await http.json({
            method: 'POST',
            path: leasePath(namespace),
            body: leaseObject({ namespace, name, spec }),
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
          await http.json({
            method: 'PUT',
            path: leasePath(namespace, name),
            body: leaseObject({ namespace, name, spec, resourceVersion }),
          });
          return true;
        } catch (e) {
          if (statusCode(e) === 409) return false;
          throw e;
        }
      }),
  };
}

/** A list response as on the wire. */
interface ListBody<T> {
  items?: T[];
  metadata?: { resourceVersion?: string; continue?: string };
}

/** A Lease as on the wire (MicroTime fields are RFC 3339 text). */
interface WireLease {
  metadata?: { resourceVersion?: string };
  spec?: {
    holderIdentity?: string | null;
    leaseDurationSeconds?: number | null;
    acquireTime?: string | null;
    renewTime?: string | null;
    leaseTransitions?: number | null;
  };
}

/** Headers and TLS material for one request, from the kubeconfig (tokens and exec credentials refresh there). */
async function requestAuth(kc: k8s.KubeConfig, proxyUrl: string | undefined): Promise<RequestAuth> {
  const o: https.RequestOptions = {};
  await kc.applyToHTTPSOptions(o);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(o.headers ?? {}))
    if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : String(v);
  // As the client's generated API had it: a token wins over a user name and password.
  if (o.auth && headers.Authorization === undefined)
    headers.Authorization = `Basic ${Buffer.from(o.auth).toString('base64')}`;
  return {
    headers,
    tls: {
      ca: o.ca as Buffer | string | undefined,
      cert: o.cert as Buffer | string | undefined,
      key: o.key as Buffer | string | undefined,
      pfx: o.pfx as Buffer | string | undefined,
      passphrase: o.passphrase,
      rejectUnauthorized: o.rejectUnauthorized,
      servername: o.servername,
    },
    // Through a proxy: the agent the kubeconfig layer built for it (one per request, as the client does).
    agent: proxyUrl ? (o.agent as https.Agent | undefined) : undefined,
  };
}

/** A Lease object for create/replace. */
function leaseObject(o: {
  namespace: string;
  name: string;
  spec: LeaseSpec;
  resourceVersion?: string;
}): object {
  return {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: {
      name: o.name,
      namespace: o.namespace,
      ...(o.resourceVersion !== undefined ? { resourceVersion: o.resourceVersion } : {}),
    },
    spec: {
      holderIdentity: o.spec.holderIdentity ?? undefined,
      leaseDurationSeconds: o.spec.leaseDurationSeconds,
      acquireTime: o.spec.acquireTime ?? undefined,
      renewTime: o.spec.renewTime ?? undefined,
      leaseTransitions: o.spec.leaseTransitions,
    },
  };
}
