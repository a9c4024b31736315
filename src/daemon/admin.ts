// Admin HTTP API: /metrics (Prometheus), /healthz, /readyz, /state (JSON of desired + actual); connections
// capped (well below the fd limit) and timed out, so clients cannot take the fds health checks and BGP need;
// /metrics and /state rendered once for concurrent requests, so scrapes cannot hold up /healthz. An optional
// second listener (admin.metricsListen) serves only GET /metrics, /healthz and /readyz, for Prometheus/kubelet.
import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { AddressInfo, Socket } from 'node:net';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { Counter, Gauge, type Registry } from '../metrics/prom';
import type { Logger } from '../log';
import { renderRegistryChunks } from '../metrics';
import { jsonChunksInTurns, jsonText } from '../util/json-turns';
import { readFdLimit } from './fdlimit';

export interface Readiness {
  ready: boolean;
  /** Why not ready, or what is degraded while still serving. */
  reasons: string[];
}

/** Bounds on admin connections; the API serves a scraper, probes and people, a few connections at a time. */
export interface AdminLimits {
  /**
   * Open connections at most (and at most a quarter of the fd limit). One more evicts the oldest connection
   * with no request in progress (so a fresh probe gets through idle ones); with none to evict it is closed.
   */
  maxConnections: number;
  /** A connection silent this long before its request (or between its bytes) is closed. */
  idleTimeoutMs: number;
  /** Request headers must be complete within this (a slow sender of bytes is cut off). */
  headersTimeoutMs: number;
  /** The whole request must be received within this (>= headersTimeoutMs). */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: number;
  /** A request in progress with no socket activity this long (a client not reading its response) is closed. */
  stallTimeoutMs: number;
}

/**
 * 256 connections: Prometheus, kubelet probes and a few people need well under 20, and at the common soft fd
 * limit of 1,024 that is the quarter the API may take. Timeouts: a client sends its request at once (5 s of
 * silence is plenty even over a slow link); 10 s for headers stops slow-header senders; 5 s keep-alive is
 * Node's default (scrapes are 15 s or more apart, so reuse rarely happens anyway); 30 s covers the largest
 * /state or /metrics being generated and read.
 */
export const ADMIN_LIMITS: AdminLimits = {
  maxConnections: 256,
  idleTimeoutMs: 5_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 15_000,
  keepAliveTimeoutMs: 5_000,
  stallTimeoutMs: 30_000,
};

/** The share of the open-file limit the admin API may hold; the rest is for checks, BGP, maps and logs. */
const FD_SHARE = 1 / 4;

/** Paths whose bodies are rendered once and shared (SharedRender). */
export type RenderedPath = '/metrics' | '/state';

/**
 * How long (ms) a rendered body is served again rather than rendered anew. /metrics: a second, far below any
 * scrape interval (a render at 100 VIPs x 20 backends is ~0.2-0.4 s of CPU, and 50 scrapes at once used to
 * hold /healthz for 22 s). /state: 0, only requests arriving during a render share it: people and tools read
 * it right after a change to see its effect, and a stale answer there misleads more than it saves.
 */
export const RENDER_REUSE_MS: Readonly<Record<RenderedPath, number>> = { '/metrics': 1000, '/state': 0 };

/**
 * One render at a time: requests that arrive while one runs wait for it, and a body younger than reuseMs is
 * served as it is. The body is encoded once (UTF-8 of a 0.8 MB /state for each of 50 responses was most of
 * the cost). A failed render fails its waiters and is not kept. The body is dropped after reuseMs so a large
 * one (30 MB at 512 x 100) is not held between scrapes.
 */
/** A rendered body: one Buffer, or Buffers sent one after another (jsonChunksInTurns'). */
export type Body = Buffer | readonly Buffer[];

export class SharedRender {
  private inFlight: Promise<Body> | null = null;
  private body: Body | null = null;
  private bodyAt = 0;
  private expiry: NodeJS.Timeout | null = null;
  private readonly render: () => Promise<string | readonly Buffer[]>;
  private readonly reuseMs: number;

  /** `render`: the body's text, or its UTF-8 in Buffers (the body as they are, sent one after another). */
  constructor(o: { render: () => Promise<string | readonly Buffer[]>; reuseMs: number }) {
    if (!(Number.isSafeInteger(o.reuseMs) && o.reuseMs >= 0))
      throw new RangeError(`reuseMs: ${o.reuseMs} is not an integer >= 0`);
    this.render = o.render;
    this.reuseMs = o.reuseMs;
  }

  /** The body, and whether it was rendered for this call, shared with a render in flight, or reused. */
  get(): Promise<{ body: Body; how: 'rendered' | 'in-flight' | 'cached' }> {
    if (this.body !== null && performance.now() - this.bodyAt < this.reuseMs)
      return Promise.resolve({ body: this.body, how: 'cached' });
    if (this.inFlight !== null) return this.inFlight.then((body) => ({ body, how: 'in-flight' as const }));
    const run = this.render().then((text) => {
      const body: Body = typeof text === 'string' ? Buffer.from(text) : text;
      this.keep(body);
      return body;
    });
    this.inFlight = run;
    void run.then(
      () => (this.inFlight = null),
      () => (this.inFlight = null),
    );
    return run.then((body) => ({ body, how: 'rendered' as const }));
  }

  /** Drops the kept body and its timer. */
  clear(): void {
    if (this.expiry !== null) clearTimeout(this.expiry);
    this.expiry = null;
    this.body = null;
  }

  private keep(body: Body): void {
    this.clear();
    if (this.reuseMs === 0) return;
    this.body = body;
    this.bodyAt = performance.now();
    this.expiry = setTimeout(() => this.clear(), this.reuseMs);
    this.expiry.unref();
  }
}

export interface AdminOptions {
  host: string;
  port: number;
  registry: Registry;
  /** Renders /metrics (default: renderRegistryChunks(registry)); the daemon's shares one datapath read per render. */
  renderMetrics?: () => Promise<string | readonly Buffer[]>;
  readiness: () => Readiness;
  /** The /state document; only `sections` when given (`?sections=a,b`), all when null. */
  state: (sections: ReadonlySet<string> | null) => Promise<unknown>;
  /** The sections /state may be asked for (its top-level keys); absent: `?sections=` is refused. */
  stateSections?: readonly string[];
  logger: Logger;
  /** Overrides of ADMIN_LIMITS. */
  limits?: Partial<AdminLimits>;
  /** The soft open-file limit (default: this process's, from /proc/self/limits; null: unknown). */
  fdLimit?: number | null;
  /** Serve a body rendered less than this long ago (ms; 0: only requests arriving during a render share it);
   * default RENDER_REUSE_MS. */
  renderReuseMs?: Partial<Record<RenderedPath, number>>;
  /** Serves the versioned API (/v1/..., admin-write.ts): true when it answered the request. */
  api?: (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;
  /**
   * A second, read-only listener: GET/HEAD /metrics, /healthz and /readyz only (the same bodies as the admin
   * listener's), never the write API or /state. Shares the connection cap and timeouts.
   */
  metricsListen?: { host: string; port: number };
}

/** The read-only listener's paths. */
export const METRICS_LISTEN_PATHS: readonly string[] = ['/metrics', '/healthz', '/readyz'];

/** The metrics listener could not listen (the admin listener is closed again). */
export class MetricsListenError extends Error {
  readonly code: string | undefined;
  constructor(cause: NodeJS.ErrnoException) {
    super(cause.message);
    this.name = 'MetricsListenError';
    this.code = cause.code;
  }
}

export interface AdminServer {
  readonly address: { host: string; port: number };
  /** The read-only metrics listener's address (null: none). */
  readonly metricsAddress?: { host: string; port: number } | null;
  /** The limits in force (maxConnections after the fd-limit cap). */
  readonly limits: AdminLimits;
  /** Connections open now. */
  connections(): number;
  stop(): Promise<void>;
}

/** Limits with overrides applied and checked, and the connection cap lowered to FD_SHARE of the fd limit. */
export function adminLimits(overrides: Partial<AdminLimits>, fdLimit: number | null): AdminLimits {
  const l = { ...ADMIN_LIMITS, ...overrides };
  for (const [k, v] of Object.entries(l))
    if (!Number.isSafeInteger(v) || v < 1)
      throw new RangeError(`admin limits: ${k}: ${v} is not a positive integer`);
  if (l.headersTimeoutMs > l.requestTimeoutMs)
    throw new RangeError(
      `admin limits: headersTimeoutMs ${l.headersTimeoutMs} is more than requestTimeoutMs ${l.requestTimeoutMs}`,
    );
  if (fdLimit !== null && Number.isFinite(fdLimit))
    l.maxConnections = Math.max(1, Math.min(l.maxConnections, Math.floor(fdLimit * FD_SHARE)));
  return l;
}

function send(res: ServerResponse, code: number, type: string, body: string | Body): void {
  if (typeof body === 'string' || Buffer.isBuffer(body)) {
    res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
    res.end(body);
    return;
  }
  // Buffers one after another, under the length of them all (no copy into one).
  const bytes = body.reduce((n, b) => n + b.length, 0);
  res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store', 'content-length': bytes });
  for (const b of body) res.write(b);
  res.end();
}

const json = jsonText;

/**
 * `?sections=a,b` of a /state request: the sections asked for (null: no such parameter, all), or an error naming the
 * value that is not one of `known`.
 */
export function parseStateSections(
  query: string | null,
  known: readonly string[],
): { sections: ReadonlySet<string> | null } | { error: string } {
  if (query === null) return { sections: null };
  const names = query
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
  const bad = names.find((x) => !known.includes(x));
  if (bad !== undefined || names.length === 0)
    return {
      error:
        known.length === 0
          ? `sections: this /state has no sections to choose from (${JSON.stringify(query)})`
          : `sections: ${JSON.stringify(bad ?? query)} is not a /state section (one or more of ${known.join(', ')}, comma-separated)`,
    };
  return { sections: new Set(names) };
}

/** True when an Accept-Encoding header allows gzip (a gzip or * token whose q is not 0). */
export function acceptsGzip(header: string | string[] | undefined): boolean {
  const text = Array.isArray(header) ? header.join(',') : (header ?? '');
  return text.split(',').some((part) => {
    const [coding, ...params] = part.trim().toLowerCase().split(';');
    if (coding?.trim() !== 'gzip' && coding?.trim() !== '*') return false;
    const q = params.map((x) => /^\s*q\s*=\s*([0-9.]+)\s*$/.exec(x)).find((m) => m !== null);
    return q === undefined || Number(q![1]) > 0;
  });
}

/** Nested entries per native write of /state (jsonInTurns' `piece`): ~64 KB of text, below V8's large objects, so
 * each piece's strings die young (16,384 entries were ~1 MB strings in the old generation until a full collection:
 * the V8 heap grew ~200 MB per /state at 512 x 100). */
export const STATE_PIECE = 1024;

export async function startAdmin(o: AdminOptions): Promise<AdminServer> {
  const fdLimit = o.fdLimit !== undefined ? o.fdLimit : (readFdLimit()?.soft ?? null);
  const limits = adminLimits(o.limits ?? {}, fdLimit);
  const reuseMs = { ...RENDER_REUSE_MS, ...o.renderReuseMs };
  // /healthz and /readyz never wait for these: they answer from memory, at most behind one render's turn.
  const renders: Record<RenderedPath, SharedRender> = {
    '/metrics': new SharedRender({
      render: o.renderMetrics ?? (() => renderRegistryChunks(o.registry)),
      reuseMs: reuseMs['/metrics'],
    }),
    '/state': stateRender(null),
  };
  /** A render of /state with only some sections (?sections=), shared by the requests asking the same while it runs. */
  const sectionRenders = new Map<string, SharedRender>();
  function stateRender(sections: ReadonlySet<string> | null): SharedRender {
    return new SharedRender({
      // written in pieces with event-loop turns between them, each encoded as it is made (jsonChunksInTurns): ~38 MB
      // at 512 x 100 with health checks
      render: async () => {
        const chunks = await jsonChunksInTurns(await o.state(sections), { piece: STATE_PIECE });
        if (chunks === undefined) return 'null\n';
        chunks.push(Buffer.from('\n'));
        return chunks;
      },
      reuseMs: reuseMs['/state'],
    });
  }
  const served = new Counter({
    name: 'peak_xdp_admin_rendered_responses_total',
    help:
      '/metrics and /state responses by how their body was made: rendered for the request, in-flight ' +
      '(shared with a render running), cached (/metrics rendered less than a second before)',
    labelNames: ['path', 'how'],
    registers: [o.registry],
  });
  // Compressed once per body (every sharer of a render gets the same Buffer), in zlib's thread pool.
  const gzipped = new WeakMap<Body, Promise<Buffer>>();
  const rendered = async (
    res: ServerResponse,
    path: RenderedPath,
    type: string,
    gz = false,
    render: SharedRender = renders[path],
  ): Promise<void> => {
    const r = await render.get();
    served.inc({ path, how: r.how });
    if (!gz) return send(res, 200, type, r.body);
    let z = gzipped.get(r.body);
    if (z === undefined)
      gzipped.set(r.body, (z = promisify(gzip)(Buffer.isBuffer(r.body) ? r.body : Buffer.concat(r.body))));
    const body = await z;
    res.writeHead(200, { 'content-type': type, 'content-encoding': 'gzip', vary: 'Accept-Encoding', 'cache-control': 'no-store' }); // prettier-ignore
    res.end(body);
  };
  const handle = async (req: IncomingMessage, res: ServerResponse, readOnly: boolean): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (readOnly) {
      // Nothing that changes state or shows more than metrics is reachable here, whatever the method.
      if (!METRICS_LISTEN_PATHS.includes(path))
        return send(res, 404, 'text/plain', `not found: this listener serves only ${METRICS_LISTEN_PATHS.join(', ')}\n`); // prettier-ignore
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('allow', 'GET, HEAD');
        return send(res, 405, 'text/plain', 'method not allowed: this listener is read-only\n');
      }
    } else if (o.api !== undefined && (await o.api(req, res))) return;
    if (req.method !== 'GET' && req.method !== 'HEAD')
      return send(res, 405, 'text/plain', 'method not allowed\n');
    switch (path) {
      case '/metrics':
        return rendered(res, path, o.registry.contentType, acceptsGzip(req.headers['accept-encoding']));
      case '/healthz':
        return send(res, 200, 'text/plain', 'ok\n');
      case '/readyz': {
        const r = o.readiness();
        return send(res, r.ready ? 200 : 503, 'application/json', json(r) + '\n');
      }
      case '/state': {
        const q = new URLSearchParams((req.url ?? '').split('?')[1] ?? '').get('sections');
        const asked = parseStateSections(q, o.stateSections ?? []);
        if ('error' in asked) return send(res, 400, 'text/plain', `${asked.error}\n`);
        if (asked.sections === null) return rendered(res, path, 'application/json');
        const key = [...asked.sections].sort().join(',');
        const shared = sectionRenders.get(key);
        if (shared !== undefined) return rendered(res, path, 'application/json', false, shared);
        // only requests arriving while it renders share it (reuseMs 0): forgotten once it is done
        const made = stateRender(asked.sections);
        sectionRenders.set(key, made);
        try {
          return await rendered(res, path, 'application/json', false, made);
        } finally {
          if (sectionRenders.get(key) === made) sectionRenders.delete(key);
        }
      }
      default:
        return send(res, 404, 'text/plain', 'not found: try /metrics, /healthz, /readyz, /state\n');
    }
  };
  const serve = (req: IncomingMessage, res: ServerResponse, readOnly: boolean): void => {
    handle(req, res, readOnly).catch((e: Error) => {
      o.logger.error({ err: e, url: req.url }, 'admin request failed');
      if (!res.headersSent) send(res, 500, 'text/plain', `error: ${e.message}\n`);
      else res.end();
    });
  };

  // Open connections, oldest first (Map order); busy while a request is in progress.
  const conns = new Map<Socket, { busy: boolean }>();
  new Gauge({
    name: 'peak_xdp_admin_connections',
    help: 'Connections open to the admin API',
    registers: [o.registry],
    collect() {
      this.set(conns.size);
    },
  });
  const closed = new Counter({
    name: 'peak_xdp_admin_connections_closed_total',
    help:
      'Admin connections the daemon closed, by reason: evicted (at the cap, the oldest without a request), ' +
      'refused (at the cap, every one busy), timeout (silent before or during a request, or idle keep-alive)',
    labelNames: ['reason'],
    registers: [o.registry],
  });

  const makeServer = (readOnly: boolean): Server => {
    const srv = createServer(
      {
        headersTimeout: limits.headersTimeoutMs,
        requestTimeout: limits.requestTimeoutMs,
        // How often Node enforces the two above (its default, 30 s, would let a slow sender stay 40 s).
        connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutMs),
      },
      (req, res) => {
        const conn = conns.get(req.socket);
        if (conn !== undefined) {
          conn.busy = true;
          res.once('close', () => (conn.busy = false));
        }
        // Replaces the idle timeout; after the response Node sets keepAliveTimeout instead.
        req.socket.setTimeout(limits.stallTimeoutMs);
        serve(req, res, readOnly);
      },
    );
    srv.keepAliveTimeout = limits.keepAliveTimeoutMs;
    srv.on('connection', onConnection);
    return srv;
  };
  // Both listeners share one cap: together they may hold at most maxConnections.
  const onConnection = (sock: Socket): void => {
    if (conns.size >= limits.maxConnections) {
      let victim: Socket | undefined;
      for (const [s, c] of conns)
        if (!c.busy) {
          victim = s;
          break;
        }
      if (victim === undefined) {
        closed.inc({ reason: 'refused' });
        sock.destroy();
        return;
      }
      closed.inc({ reason: 'evicted' });
      conns.delete(victim);
      victim.destroy();
    }
    conns.set(sock, { busy: false });
    sock.once('close', () => conns.delete(sock));
    // Node's server destroys a socket that times out (no request or response listens); this only counts it.
    sock.on('timeout', () => closed.inc({ reason: 'timeout' }));
    sock.setTimeout(limits.idleTimeoutMs);
  };
  const listen = (srv: Server, port: number, host: string): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, host, () => {
        srv.off('error', reject);
        resolve();
      });
    });
  const close = (srv: Server): Promise<void> =>
    new Promise<void>((resolve) => {
      srv.closeAllConnections();
      srv.close(() => resolve());
    });
  const server = makeServer(false);
  await listen(server, o.port, o.host);
  // After the listen, a server error (e.g. EMFILE on accept) is logged; the daemon and its datapath live on.
  server.on('error', (e: Error) => o.logger.error({ err: e }, 'admin API server error'));
  let metricsServer: Server | null = null;
  if (o.metricsListen !== undefined) {
    const m = makeServer(true);
    try {
      await listen(m, o.metricsListen.port, o.metricsListen.host);
    } catch (e) {
      await close(server);
      throw new MetricsListenError(e as NodeJS.ErrnoException);
    }
    m.on('error', (e: Error) => o.logger.error({ err: e }, 'metrics listener server error'));
    metricsServer = m;
  }
  const a = server.address() as AddressInfo;
  const ma = metricsServer?.address() as AddressInfo | undefined;
  if (ma !== undefined)
    o.logger.info(
      { host: ma.address, port: ma.port, paths: METRICS_LISTEN_PATHS },
      'metrics listener (read-only) listening',
    );
  o.logger.info(
    { host: a.address, port: a.port, fdLimit, ...limits },
    'admin API listening (connections capped at maxConnections, a share of the fd limit)',
  );
  if (fdLimit !== null && limits.maxConnections < (o.limits?.maxConnections ?? ADMIN_LIMITS.maxConnections))
    o.logger.warn(
      { fdLimit, maxConnections: limits.maxConnections },
      'low open-file limit: admin connections capped at a quarter of it (raise LimitNOFILE / ulimit -n)',
    );
  return {
    address: { host: a.address, port: a.port },
    metricsAddress: ma === undefined ? null : { host: ma.address, port: ma.port },
    limits,
    connections: () => conns.size,
    stop: async () => {
      for (const r of Object.values(renders)) r.clear();
      await Promise.all([close(server), ...(metricsServer ? [close(metricsServer)] : [])]);
    },
  };
}
