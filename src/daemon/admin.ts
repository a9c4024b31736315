// Admin HTTP API: /metrics (Prometheus), /healthz, /readyz, /state (JSON of desired + actual).
import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from '../log';

export interface Readiness {
  ready: boolean;
  /** Why not ready, or what is degraded while still serving. */
  reasons: string[];
}

export interface AdminOptions {
  host: string;
  port: number;
  registry: Registry;
  readiness: () => Readiness;
  state: () => Promise<unknown>;
  logger: Logger;
}

export interface AdminServer {
  readonly address: { host: string; port: number };
  stop(): Promise<void>;
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
  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e: Error) => {
      o.logger.error({ err: e, url: req.url }, 'admin request failed');
      if (!res.headersSent) send(res, 500, 'text/plain', `error: ${e.message}\n`);
      else res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  o.logger.info({ host: a.address, port: a.port }, 'admin API listening');
  return {
    address: { host: a.address, port: a.port },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
