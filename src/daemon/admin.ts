// Admin HTTP API: /metrics (Prometheus), /healthz, /readyz, /state (JSON of desired + actual); connections
// capped (well below the fd limit) and timed out, so clients cannot take the fds health checks and BGP need.
import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { AddressInfo, Socket } from 'node:net';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../log';
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

export interface AdminOptions {
  host: string;
  port: number;
  registry: Registry;
  readiness: () => Readiness;
  state: () => Promise<unknown>;
  logger: Logger;
  /** Overrides of ADMIN_LIMITS. */
  limits?: Partial<AdminLimits>;
  /** The soft open-file limit (default: this process's, from /proc/self/limits; null: unknown). */
  fdLimit?: number | null;
}

export interface AdminServer {
  readonly address: { host: string; port: number };
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

function send(res: ServerResponse, code: number, type: string, body: string): void {
  res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

const json = (v: unknown) =>
  JSON.stringify(
    v,
    (_k, x) => (typeof x === 'bigint' ? x.toString() : x instanceof Map ? Object.fromEntries(x) : x),
    2,
  );

export async function startAdmin(o: AdminOptions): Promise<AdminServer> {
  const fdLimit = o.fdLimit !== undefined ? o.fdLimit : (readFdLimit()?.soft ?? null);
  const limits = adminLimits(o.limits ?? {}, fdLimit);
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD')
      return send(res, 405, 'text/plain', 'method not allowed\n');
    switch (path) {
      case '/metrics':
        return send(res, 200, o.registry.contentType, await o.registry.metrics());
      case '/healthz':
        return send(res, 200, 'text/plain', 'ok\n');
      case '/readyz': {
        const r = o.readiness();
        return send(res, r.ready ? 200 : 503, 'application/json', json(r) + '\n');
      }
      case '/state':
        return send(res, 200, 'application/json', json(await o.state()) + '\n');
      default:
        return send(res, 404, 'text/plain', 'not found: try /metrics, /healthz, /readyz, /state\n');
    }
  };
  const serve = (req: IncomingMessage, res: ServerResponse): void => {
    handle(req, res).catch((e: Error) => {
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

  const server: Server = createServer(
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
      serve(req, res);
    },
  );
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  server.on('connection', (sock: Socket) => {
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
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // After the listen, a server error (e.g. EMFILE on accept) is logged; the daemon and its datapath live on.
  server.on('error', (e: Error) => o.logger.error({ err: e }, 'admin API server error'));
  const a = server.address() as AddressInfo;
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
    limits,
    connections: () => conns.size,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
