// A fake Kubernetes API server on loopback speaking the real wire protocol: lists with resourceVersion and
// paging, chunked watch streams (JSON lines of {type, object}), BOOKMARKs, 410 Gone (ERROR event or HTTP),
// dropped connections, services/status PUT/PATCH, Events POST, coordination.k8s.io/v1 Lease GET/PUT/POST,
// and cluster-scoped Nodes (list/watch/get, status PUT/PATCH).
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type Resource = 'services' | 'endpointslices' | 'leases' | 'events' | 'nodes';

interface Kind {
  kind: string;
  apiVersion: string;
  prefix: string;
  /** Cluster-scoped (no namespace in paths or metadata), like Nodes. */
  clusterScoped?: boolean;
}

const KINDS: Record<Resource, Kind> = {
  services: { kind: 'Service', apiVersion: 'v1', prefix: '/api/v1' },
  endpointslices: {
    kind: 'EndpointSlice',
    apiVersion: 'discovery.k8s.io/v1',
    prefix: '/apis/discovery.k8s.io/v1',
  },
  leases: { kind: 'Lease', apiVersion: 'coordination.k8s.io/v1', prefix: '/apis/coordination.k8s.io/v1' },
  events: { kind: 'Event', apiVersion: 'v1', prefix: '/api/v1' },
  nodes: { kind: 'Node', apiVersion: 'v1', prefix: '/api/v1', clusterScoped: true },
};

/** The store key of an object: "namespace/name", "/name" for cluster-scoped kinds (as the source keys them). */
const storeKey = (resource: Resource, namespace: string | null | undefined, name: string): string =>
  `${KINDS[resource].clusterScoped ? '' : (namespace ?? 'default')}/${name}`;

/* eslint-disable @typescript-eslint/no-explicit-any -- objects are free-form JSON, as on the wire */
export type Obj = {
  metadata: { name?: string; namespace?: string; resourceVersion?: string; [k: string]: any };
  [k: string]: any;
};
/* eslint-enable @typescript-eslint/no-explicit-any */

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  contentType: string | undefined;
  /** The Authorization header as sent. */
  authorization: string | undefined;
  /** The Impersonate-User header (only @kubernetes/client-node's KubeConfig sends it, for a user's `as`). */
  impersonate: string | undefined;
  body: unknown;
  atMs: number;
}

interface Watcher {
  resource: Resource;
  namespace: string | null;
  res: http.ServerResponse;
  bookmarks: boolean;
  timer: NodeJS.Timeout | null;
}

interface HistoryEntry {
  rv: number;
  resource: Resource;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Obj;
}

const MAX_LIST_SNAPSHOTS = 64;

const snapshotKey = (resource: Resource, namespace: string | null, rv: number): string =>
  `${resource}|${namespace ?? ''}|${rv}`;

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

/** RFC 7386 JSON merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return clone(patch);
  const out: Record<string, unknown> =
    target !== null && typeof target === 'object' && !Array.isArray(target)
      ? { ...(target as Record<string, unknown>) }
      : {};
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

const statusBody = (code: number, reason: string, message: string): object => ({
  kind: 'Status',
  apiVersion: 'v1',
  metadata: {},
  status: 'Failure',
  message,
  reason,
  code,
});

export class FakeApiServer {
  private readonly server: http.Server;
  private readonly store = new Map<Resource, Map<string, Obj>>();
  private history: HistoryEntry[] = [];
  private rv = 100;
  /** Watches and continue tokens older than this resourceVersion get 410 Gone. */
  private compactedRv = 0;
  /**
   * A paged list's later pages come from the snapshot its first page was cut from, as the real server reads
   * etcd at the list's resourceVersion: objects changed meanwhile show in the watch from that version, not
   * half in the list. Store objects are replaced, never mutated, so a snapshot holds references.
   */
  private readonly listSnapshots = new Map<string, Obj[]>();
  private readonly watchers = new Set<Watcher>();
  private readonly sockets = new Set<Socket>();
  private unavailable = false;
  /** How a too-old watch is refused: an ERROR event in a 200 stream (as the API server does) or HTTP 410. */
  goneMode: 'event' | 'http' = 'event';
  readonly requests: RecordedRequest[] = [];
  /** TCP connections accepted so far. */
  connections = 0;
  /** Called on every mutation with the time it was served (ms, Date.now()). */
  onMutation: ((e: { resource: Resource; type: string; object: Obj; atMs: number }) => void) | null = null;
  port = 0;

  constructor() {
    for (const r of Object.keys(KINDS) as Resource[]) this.store.set(r, new Map());
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((e: unknown) => {
        if (!res.headersSent) this.sendStatus(res, 500, 'InternalError', (e as Error).message);
        else res.destroy();
      });
    });
    this.server.on('connection', (s: Socket) => {
      if (this.unavailable) {
        s.destroy();
        return;
      }
      this.sockets.add(s);
      this.connections++;
      s.on('close', () => this.sockets.delete(s));
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const w of this.watchers) this.endWatch(w, true);
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Writes a kubeconfig for this server (plain http needs insecure-skip-tls-verify). */
  writeKubeconfig(path: string): void {
    writeFileSync(
      path,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters:',
        '- name: fake',
        '  cluster:',
        `    server: ${this.url}`,
        '    insecure-skip-tls-verify: true',
        'users:',
        '- name: fake',
        '  user:',
        '    token: fake-token',
        'contexts:',
        '- name: fake',
        '  context: {cluster: fake, user: fake}',
        'current-context: fake',
        '',
      ].join('\n'),
    );
  }

  // ---- test controls ----

  resourceVersion(): string {
    return String(this.rv);
  }

  /** Creates or replaces an object (as another controller would), notifying watchers. */
  upsert(resource: Resource, obj: Obj): Obj {
    const key = storeKey(resource, obj.metadata.namespace, obj.metadata.name ?? '');
    const old = this.store.get(resource)!.get(key);
    const o = clone(obj);
    if (KINDS[resource].clusterScoped) delete o.metadata.namespace;
    else o.metadata.namespace = obj.metadata.namespace ?? 'default';
    o.metadata.uid = old?.metadata.uid ?? o.metadata.uid ?? randomUUID();
    return this.commit(resource, old ? 'MODIFIED' : 'ADDED', o);
  }

  /** Deletes an object (namespace ignored for cluster-scoped kinds). */
  remove(resource: Resource, namespace: string, name: string): boolean {
    const key = storeKey(resource, namespace, name);
    const old = this.store.get(resource)!.get(key);
    if (!old) return false;
    this.commit(resource, 'DELETED', clone(old));
    return true;
  }

  get(resource: Resource, namespace: string, name: string): Obj | undefined {
    const o = this.store.get(resource)!.get(storeKey(resource, namespace, name));
    return o ? clone(o) : undefined;
  }

  list(resource: Resource): Obj[] {
    return [...this.store.get(resource)!.values()].map(clone);
  }

  /** Forgets history up to now: a watch resuming from an older resourceVersion gets 410 Gone. */
  compact(): void {
    this.compactedRv = this.rv;
    this.history = [];
    this.listSnapshots.clear();
  }

  /** Compacts and tells every open watch 410 Gone (ERROR event, or the stream just ends in 'http' mode). */
  expireWatches(): void {
    this.compact();
    for (const w of [...this.watchers]) {
      this.write(w, { type: 'ERROR', object: statusBody(410, 'Expired', 'too old resource version') });
      this.endWatch(w, false);
    }
  }

  /** Kills every watch connection mid-stream (no clean end of the chunked body). */
  dropWatches(): void {
    for (const w of [...this.watchers]) this.endWatch(w, true);
  }

  /** Makes the server unreachable (every connection destroyed) or reachable again. */
  setUnavailable(down: boolean): void {
    this.unavailable = down;
    if (down) {
      this.dropWatches();
      for (const s of this.sockets) s.destroy();
    }
  }

  /** Sends a BOOKMARK with the current resourceVersion to every watch that asked for them. */
  bookmark(): number {
    let n = 0;
    for (const w of this.watchers)
      if (w.bookmarks) {
        const k = KINDS[w.resource];
        this.write(w, {
          type: 'BOOKMARK',
          object: { kind: k.kind, apiVersion: k.apiVersion, metadata: { resourceVersion: String(this.rv) } },
        });
        n++;
      }
    return n;
  }

  activeWatches(resource?: Resource): number {
    return [...this.watchers].filter((w) => resource === undefined || w.resource === resource).length;
  }

  // ---- protocol ----

  private commit(resource: Resource, type: HistoryEntry['type'], o: Obj): Obj {
    this.rv++;
    const k = KINDS[resource];
    o.kind = k.kind;
    o.apiVersion = k.apiVersion;
    o.metadata.resourceVersion = String(this.rv);
    o.metadata.creationTimestamp ??= new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const key = storeKey(resource, o.metadata.namespace, o.metadata.name ?? '');
    // One copy serves the store, the history and every watch (they never mutate it); `o` is the caller's.
    const stored = clone(o);
    if (type === 'DELETED') this.store.get(resource)!.delete(key);
    else this.store.get(resource)!.set(key, stored);
    const entry: HistoryEntry = { rv: this.rv, resource, type, object: stored };
    this.history.push(entry);
    let line: string | null = null;
    for (const w of this.watchers)
      if (w.resource === resource && (w.namespace === null || w.namespace === o.metadata.namespace))
        this.writeLine(w, (line ??= JSON.stringify({ type, object: stored })));
    this.onMutation?.({ resource, type, object: clone(o), atMs: Date.now() });
    return o;
  }

  private write(w: Watcher, ev: object): void {
    this.writeLine(w, JSON.stringify(ev));
  }

  private writeLine(w: Watcher, line: string): void {
    if (!w.res.writableEnded && !w.res.destroyed) w.res.write(`${line}\n`);
  }

  private endWatch(w: Watcher, abrupt: boolean): void {
    this.watchers.delete(w);
    if (w.timer) clearTimeout(w.timer);
    if (abrupt) w.res.socket?.destroy();
    else if (!w.res.writableEnded) w.res.end();
  }

  private sendJson(res: http.ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  private sendStatus(res: http.ServerResponse, code: number, reason: string, message: string): void {
    this.sendJson(res, code, statusBody(code, reason, message));
  }

  private async readBody(req: http.IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    return text === '' ? undefined : (JSON.parse(text) as unknown);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.url);
    const query = Object.fromEntries(url.searchParams.entries());
    const method = req.method ?? 'GET';
    let body: unknown;
    try {
      body = await this.readBody(req);
    } catch {
      return this.sendStatus(res, 400, 'BadRequest', 'body is not JSON');
    }
    this.requests.push({
      method,
      path: url.pathname,
      query,
      contentType: req.headers['content-type'],
      authorization: req.headers.authorization,
      impersonate: req.headers['impersonate-user'] as string | undefined,
      body,
      atMs: Date.now(),
    });
    if (this.unavailable) {
      res.socket?.destroy();
      return;
    }
    const m =
      /^\/(?:api\/v1|apis\/(discovery\.k8s\.io|coordination\.k8s\.io)\/v1)(?:\/namespaces\/([^/]+))?\/([a-z]+)(?:\/([^/]+))?(?:\/(status))?$/.exec(
        url.pathname,
      );
    const resource = m?.[3] as Resource | undefined;
    if (
      !m ||
      resource === undefined ||
      !(resource in KINDS) ||
      KINDS[resource].prefix !== (m[1] ? `/apis/${m[1]}/v1` : '/api/v1')
    )
      return this.sendStatus(
        res,
        404,
        'NotFound',
        `the server could not find the requested resource ${url.pathname}`,
      );
    const namespace = m[2] ?? null;
    const name = m[4] ?? null;
    const sub = m[5] ?? null;
    const objects = this.store.get(resource)!;
    const clusterScoped = KINDS[resource].clusterScoped === true;
    if (clusterScoped && namespace !== null)
      return this.sendStatus(res, 404, 'NotFound', `${resource} is cluster-scoped: ${url.pathname}`);

    if (method === 'GET' && name === null) {
      if (query.watch === 'true' || query.watch === '1')
        return this.serveWatch(req, res, resource, namespace, query);
      return this.serveList(res, resource, namespace, query);
    }
    if (method === 'POST' && name === null && (namespace !== null || clusterScoped)) {
      const o = body as Obj;
      if (!o?.metadata) return this.sendStatus(res, 400, 'BadRequest', 'metadata is required');
      if (clusterScoped) delete o.metadata.namespace;
      else o.metadata.namespace = namespace ?? undefined;
      if (!o.metadata.name && o.metadata.generateName)
        o.metadata.name = `${o.metadata.generateName}${randomUUID().slice(0, 5)}`;
      if (!o.metadata.name) return this.sendStatus(res, 422, 'Invalid', 'metadata.name: Required value');
      if (objects.has(storeKey(resource, namespace, o.metadata.name)))
        return this.sendStatus(res, 409, 'AlreadyExists', `${resource} "${o.metadata.name}" already exists`);
      o.metadata.uid = randomUUID();
      delete o.metadata.resourceVersion;
      return this.sendJson(res, 201, this.commit(resource, 'ADDED', o));
    }
    if (name === null || (namespace === null && !clusterScoped))
      return this.sendStatus(res, 405, 'MethodNotAllowed', `${method} ${url.pathname}`);
    const key = storeKey(resource, namespace, name);
    const cur = objects.get(key);
    if (!cur) return this.sendStatus(res, 404, 'NotFound', `${resource} "${name}" not found`);
    if (method === 'GET') return this.sendJson(res, 200, clone(cur));
    if (method === 'PUT') {
      const o = body as Obj;
      if (!o?.metadata) return this.sendStatus(res, 400, 'BadRequest', 'metadata is required');
      if (
        o.metadata.resourceVersion !== undefined &&
        o.metadata.resourceVersion !== cur.metadata.resourceVersion
      )
        return this.sendStatus(
          res,
          409,
          'Conflict',
          `Operation cannot be fulfilled on ${resource} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        );
      const next =
        sub === 'status' ? { ...clone(cur), status: o.status } : { ...clone(o), status: cur.status };
      next.metadata = {
        ...clone(cur.metadata),
        labels: o.metadata.labels ?? cur.metadata.labels,
        annotations: o.metadata.annotations ?? cur.metadata.annotations,
      };
      if (resource === 'leases' || resource === 'events') next.status = undefined;
      return this.sendJson(res, 200, this.commit(resource, 'MODIFIED', next));
    }
    if (method === 'PATCH') {
      const ct = req.headers['content-type'] ?? '';
      if (!/^application\/(merge-patch|strategic-merge-patch)\+json/.test(ct))
        return this.sendStatus(
          res,
          415,
          'UnsupportedMediaType',
          `the body of the request was in an unknown format: ${ct}`,
        );
      const patched = mergePatch(clone(cur), body) as Obj;
      // The status subresource changes only status; the main resource never changes status.
      const next =
        sub === 'status'
          ? { ...clone(cur), status: patched.status }
          : {
              ...patched,
              status: cur.status,
              metadata: { ...patched.metadata, resourceVersion: cur.metadata.resourceVersion },
            };
      return this.sendJson(res, 200, this.commit(resource, 'MODIFIED', next as Obj));
    }
    if (method === 'DELETE') {
      this.commit(resource, 'DELETED', clone(cur));
      return this.sendJson(res, 200, clone(cur));
    }
    return this.sendStatus(res, 405, 'MethodNotAllowed', `${method} ${url.pathname}`);
  }

  private serveList(
    res: http.ServerResponse,
    resource: Resource,
    namespace: string | null,
    query: Record<string, string>,
  ): void {
    const k = KINDS[resource];
    let all: Obj[] = [];
    let start = 0;
    let listRv = this.rv;
    if (query.continue) {
      let token: { rv: number; start: number };
      try {
        token = JSON.parse(Buffer.from(query.continue, 'base64').toString('utf8')) as {
          rv: number;
          start: number;
        };
      } catch {
        return this.sendStatus(
          res,
          400,
          'BadRequest',
          `continue ${JSON.stringify(query.continue)} is not a valid token`,
        );
      }
      const snapshot = this.listSnapshots.get(snapshotKey(resource, namespace, token.rv));
      if (token.rv < this.compactedRv || snapshot === undefined)
        return this.sendStatus(res, 410, 'Expired', 'the provided continue parameter is too old');
      all = snapshot;
      start = token.start;
      listRv = token.rv;
    } else
      all = [...this.store.get(resource)!.entries()]
        .filter(([, o]) => namespace === null || o.metadata.namespace === namespace)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([, o]) => o);
    const limit = query.limit ? Number(query.limit) : 0;
    const end = limit > 0 ? Math.min(all.length, start + limit) : all.length;
    const metadata: Record<string, string> = { resourceVersion: String(listRv) };
    if (end < all.length) {
      metadata.continue = Buffer.from(JSON.stringify({ rv: listRv, start: end })).toString('base64');
      const key = snapshotKey(resource, namespace, listRv);
      if (!this.listSnapshots.has(key)) {
        this.listSnapshots.set(key, all);
        // A bounded number of lists in progress; an evicted one's next page gets 410 (re-list).
        if (this.listSnapshots.size > MAX_LIST_SNAPSHOTS)
          this.listSnapshots.delete(this.listSnapshots.keys().next().value!);
      }
    }
    this.sendJson(res, 200, {
      kind: `${k.kind}List`,
      apiVersion: k.apiVersion,
      metadata,
      items: all.slice(start, end).map(clone),
    });
  }

  private serveWatch(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    resource: Resource,
    namespace: string | null,
    query: Record<string, string>,
  ): void {
    const from = query.resourceVersion ?? '';
    const fromNum = from === '' || from === '0' ? null : Number(from);
    if (fromNum !== null && (Number.isNaN(fromNum) || fromNum < this.compactedRv)) {
      if (this.goneMode === 'http')
        return this.sendStatus(
          res,
          410,
          'Expired',
          `too old resource version: ${from} (${this.compactedRv})`,
        );
      res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
      res.end(
        `${JSON.stringify({ type: 'ERROR', object: statusBody(410, 'Expired', `too old resource version: ${from} (${this.compactedRv})`) })}\n`,
      );
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = {
      resource,
      namespace,
      res,
      bookmarks: query.allowWatchBookmarks === 'true',
      timer: null,
    };
    const matches = (o: Obj): boolean => namespace === null || o.metadata.namespace === namespace;
    if (fromNum === null) {
      // No resourceVersion: synthetic ADDED for everything, then changes.
      for (const o of this.store.get(resource)!.values())
        if (matches(o)) this.write(w, { type: 'ADDED', object: clone(o) });
    } else {
      for (const h of this.history)
        if (h.resource === resource && h.rv > fromNum && matches(h.object))
          this.write(w, { type: h.type, object: h.object });
    }
    this.watchers.add(w);
    const t = Number(query.timeoutSeconds ?? 0);
    if (t > 0) w.timer = setTimeout(() => this.endWatch(w, false), t * 1000);
    // The response's close: the client went away (the request's close comes once its empty body is read).
    res.on('close', () => {
      this.watchers.delete(w);
      if (w.timer) clearTimeout(w.timer);
    });
  }
}
